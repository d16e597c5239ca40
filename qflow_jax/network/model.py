"""`QubitNetwork`: qubits on a weighted graph with swap-based diffusive coupling.

The network master equation (docs/physics.md, section 2):

    d rho/dt = -i[H, rho] + sum_j sum_m D[L_jm] rho
               + k sum_{(j,l) in E} a_jl (U_jl rho U_jl - rho)
    H = sum_j H_j + sum_{(j,l)} H_jl

with U_jl the swap of qubits j and l. Qubit 0 is the most significant tensor factor.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from qflow_jax.core.checks import check_finite, check_hermitian, is_concrete
from qflow_jax.operators import PAULI

__all__ = [
    "GRAPHS",
    "NAMED_COUPLINGS",
    "QubitNetwork",
    "collective_couplings",
    "coupling_matrix",
    "graph_edges",
]

GRAPHS = ("path", "ring", "complete", "star", "random")

NAMED_COUPLINGS = ("XX", "YY", "ZZ", "XY", "exchange", "heisenberg")


def coupling_matrix(name: str, strength: float = 1.0) -> np.ndarray:
    """The 4 x 4 two-qubit coupling Hamiltonian called `name`, times `strength`.

    XX = X(x)X, YY, ZZ likewise; "XY" and "exchange" are the flip-flop
    (X(x)X + Y(x)Y)/2 = sigma+ sigma- + sigma- sigma+; "heisenberg" is
    X(x)X + Y(x)Y + Z(x)Z.

    Examples:
        >>> complex(coupling_matrix("ZZ", 0.5)[0, 0])
        (0.5+0j)
    """
    key = name.lower()
    if key in ("xx", "yy", "zz"):
        p = PAULI[key[0].upper()]
        mat = np.kron(p, p)
    elif key in ("xy", "exchange"):
        mat = 0.5 * (np.kron(PAULI["X"], PAULI["X"]) + np.kron(PAULI["Y"], PAULI["Y"]))
    elif key == "heisenberg":
        mat = sum(np.kron(PAULI[a], PAULI[a]) for a in "XYZ")
    else:
        raise ValueError(
            f"unknown coupling name {name!r}; choose one of "
            f"{', '.join(NAMED_COUPLINGS)}"
        )
    return strength * mat


def collective_couplings(
    n: int, name: str, strength: float = 1.0
) -> list[tuple[int, int, np.ndarray]]:
    """All-to-all pair couplings: `strength` sum_{j<l} h_jl for a named h.

    Collective spin operators reduce to this form, e.g. with S_a = sum_j sigma_a^j / 2,
    S_x^2 = n/4 + (1/2) sum_{j<l} X_j X_l: `collective_couplings(n, "XX", chi / 2)`
    is chi S_x^2 up to a constant.

    Examples:
        >>> len(collective_couplings(4, "ZZ"))
        6
    """
    mat = coupling_matrix(name, strength)
    return [(j, q, mat) for j, q in itertools.combinations(range(n), 2)]


def graph_edges(
    name: str, n: int, *, p: float = 0.5, seed: int = 0, weight: float = 1.0
) -> list[tuple[int, int, float]]:
    """Edges (j, l, weight) of a named graph on n vertices.

    "path" 0-1-...-(n-1), "ring" (the path closed; n >= 3), "complete", "star"
    (centre 0), "random" (Erdos-Renyi G(n, p) drawn with `seed`, redrawn until
    connected, at most 1000 tries).

    Examples:
        >>> graph_edges("ring", 3)
        [(0, 1, 1.0), (1, 2, 1.0), (2, 0, 1.0)]
    """
    if name == "path":
        pairs = [(j, j + 1) for j in range(n - 1)]
    elif name == "ring":
        if n < 3:
            raise ValueError(f"a ring needs n >= 3 qubits, got n={n}")
        pairs = [(j, (j + 1) % n) for j in range(n)]
    elif name == "complete":
        pairs = list(itertools.combinations(range(n), 2))
    elif name == "star":
        pairs = [(0, j) for j in range(1, n)]
    elif name == "random":
        if not 0.0 < p <= 1.0:
            raise ValueError(f"`p` (edge probability) must lie in (0, 1], got {p}")
        rng = np.random.default_rng(seed)
        all_pairs = list(itertools.combinations(range(n), 2))
        for _ in range(1000):
            keep = rng.random(len(all_pairs)) < p
            pairs = [e for e, kp in zip(all_pairs, keep, strict=True) if kp]
            if n == 1 or len(_components(n, pairs)) == 1:
                break
        else:
            raise ValueError(f"no connected G(n={n}, p={p}) found in 1000 draws")
    else:
        raise ValueError(f"unknown graph {name!r}; choose one of {', '.join(GRAPHS)}")
    return [(j, q, float(weight)) for j, q in pairs]


def _components(n: int, pairs: Sequence[tuple[int, int]]) -> list[list[int]]:
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for j, q in pairs:
        parent[find(j)] = find(q)
    groups: dict[int, list[int]] = {}
    for j in range(n):
        groups.setdefault(find(j), []).append(j)
    return sorted(groups.values())


def _matrix(x: Any, shape: tuple[int, int], name: str) -> Any:
    """A checked complex matrix: NumPy for concrete input, a JAX array for a traced
    one (whose finiteness is then checked where the solve runs)."""
    if type(x).__name__ == "Qobj" and hasattr(x, "full"):
        x = x.full()
    arr = (np if is_concrete(x) else jnp).asarray(x, dtype=complex)
    if arr.shape != shape:
        raise ValueError(f"`{name}` must have shape {shape}, got shape {arr.shape}")
    return check_finite(arr, name)


def _qubit(x: Any, name: str) -> int:
    """A qubit index: an integer (or an integral float), never truncated."""
    if isinstance(x, bool) or not isinstance(x, int | np.integer | float | np.floating):
        raise TypeError(f"`{name}` names qubit {x!r}; qubit indices are integers")
    if int(x) != x:
        raise ValueError(f"`{name}` names qubit {x}; qubit indices are integers")
    return int(x)


def _hermitian(arr: Any, name: str) -> Any:
    return check_hermitian(arr, name, rtol=1e-12)


class QubitNetwork(eqx.Module):
    r"""n qubits on a weighted graph, coupled by swaps of gain k.

        d rho/dt = -i[sum_j H_j + sum_(j,l) H_jl, rho] + sum_j sum_m D[L_jm] rho
                   + k sum_{(j,l) in E} a_jl (U_jl rho U_jl - rho)

    All data are checked when the network is built. The swap gain, the
    Hamiltonians, the jump operators and the coupling strengths may also be traced
    JAX values (inside `jax.jit` or `jax.grad`), for `network_mesolve`.

    Args:
        n: number of qubits.
        edges: list of (j, l, weight) or (j, l) (weight 1), or a graph name from
            `GRAPHS` (see `graph_edges`; `graph_p` and `graph_seed` apply to "random").
        k: swap gain, >= 0.
        H: per-qubit Hamiltonians, (n, 2, 2) or a list of n Hermitian 2 x 2;
            None for zero.
        jump_ops: per-qubit lists of 2 x 2 jump operators (n lists); None for none.
        couplings: pair Hamiltonians, each (j, l, 4 x 4 Hermitian) or
            (j, l, name, strength) with a name from `NAMED_COUPLINGS`; j is the more
            significant factor of the 4 x 4 matrix.
        graph_p, graph_seed: parameters of the "random" graph.

    A disconnected graph is allowed, with a warning: qubits then cluster per
    connected component (`components`).

    Examples:
        >>> import qflow_jax as qf
        >>> net = QubitNetwork(3, "path", k=10.0,
        ...     H=[0.5 * (j + 1) * qf.sigmaz() for j in range(3)],
        ...     jump_ops=[[0.3 * qf.sigmam()]] * 3)
        >>> net.degrees
        array([1., 2., 1.])
    """

    n: int = eqx.field(static=True)
    edges: tuple[tuple[int, int], ...] = eqx.field(static=True)
    weights: np.ndarray
    k: float
    H: np.ndarray
    jump_ops: tuple[tuple[np.ndarray, ...], ...]
    couplings: tuple[tuple[int, int, np.ndarray], ...]

    def __init__(
        self,
        n: int,
        edges: Sequence[Sequence[Any]] | str,
        k: float,
        H: Any = None,
        jump_ops: Sequence[Sequence[Any]] | None = None,
        couplings: Sequence[Sequence[Any]] = (),
        *,
        graph_p: float = 0.5,
        graph_seed: int = 0,
    ):
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ValueError(f"`n` must be a positive integer, got {n!r}")
        n = int(n)
        if isinstance(edges, str):
            edges = graph_edges(edges, n, p=graph_p, seed=graph_seed)
        pairs, weights = [], []
        seen = set()
        for i, e in enumerate(edges):
            if len(e) not in (2, 3):
                raise ValueError(
                    f"`edges[{i}]` must be (j, l) or (j, l, weight), got {e}"
                )
            j, q = _qubit(e[0], f"edges[{i}]"), _qubit(e[1], f"edges[{i}]")
            w = float(e[2]) if len(e) == 3 else 1.0
            if not (0 <= j < n and 0 <= q < n):
                raise ValueError(
                    f"`edges[{i}]` = {tuple(e)} names a qubit outside 0..{n - 1}"
                )
            if j == q:
                raise ValueError(f"`edges[{i}]` = {tuple(e)} is a self-loop")
            if not (np.isfinite(w) and w >= 0):
                raise ValueError(f"`edges[{i}]` has weight {w}; weights must be >= 0")
            if frozenset((j, q)) in seen:
                raise ValueError(f"`edges[{i}]` = {tuple(e)} repeats an edge")
            seen.add(frozenset((j, q)))
            pairs.append((j, q))
            weights.append(w)
        if is_concrete(k) and not (np.isfinite(k) and k >= 0):
            raise ValueError(f"`k` (swap gain) must be finite and >= 0, got {k}")

        if H is None:
            H = np.zeros((n, 2, 2), dtype=complex)
        if len(H) != n:
            raise ValueError(f"`H` must hold n={n} Hamiltonians, got {len(H)}")
        H = [
            _hermitian(_matrix(h, (2, 2), f"H[{j}]"), f"H[{j}]")
            for j, h in enumerate(H)
        ]
        H = np.stack(H) if is_concrete(H) else jnp.stack(H)
        if jump_ops is None:
            jump_ops = [[] for _ in range(n)]
        if len(jump_ops) != n:
            raise ValueError(
                f"`jump_ops` must hold n={n} lists (one per qubit), got {len(jump_ops)}"
            )
        jumps = tuple(
            tuple(_matrix(L, (2, 2), f"jump_ops[{j}][{m}]") for m, L in enumerate(Ls))
            for j, Ls in enumerate(jump_ops)
        )
        pair_terms = []
        for i, c in enumerate(couplings):
            name = f"couplings[{i}]"
            if len(c) == 4:
                strength = c[3] if not is_concrete(c[3]) else float(c[3])
                mat = coupling_matrix(str(c[2])) * strength
            elif len(c) == 3:
                mat = _hermitian(_matrix(c[2], (4, 4), f"{name}[2]"), f"{name}[2]")
            else:
                raise ValueError(
                    f"`{name}` must be (j, l, 4x4 matrix) or (j, l, name, strength)"
                )
            j, q = _qubit(c[0], name), _qubit(c[1], name)
            if not (0 <= j < n and 0 <= q < n) or j == q:
                raise ValueError(
                    f"`{name}` acts on qubits ({j}, {q}); they must be distinct and "
                    f"in 0..{n - 1}"
                )
            pair_terms.append((j, q, mat))

        self.n = n
        self.edges = tuple(pairs)
        self.weights = np.asarray(weights, dtype=float)
        self.k = float(k) if is_concrete(k) else k
        self.H = H
        self.jump_ops = jumps
        self.couplings = tuple(pair_terms)
        comps = self.components
        if len(comps) > 1:
            warnings.warn(
                f"the graph of this network is disconnected ({len(comps)} components: "
                f"{comps}); qubits cluster per component",
                UserWarning,
                stacklevel=2,
            )

    @property
    def components(self) -> list[list[int]]:
        """Connected components of the graph (edges of weight 0 do not connect)."""
        live = [e for e, w in zip(self.edges, self.weights, strict=True) if w > 0]
        return _components(self.n, live)

    @property
    def is_local(self) -> bool:
        """True when there are no pair couplings: the reduced states then close."""
        return not self.couplings

    @property
    def degrees(self) -> np.ndarray:
        return np.diag(self.graph_laplacian())

    def graph_laplacian(self) -> np.ndarray:
        """Weighted graph Laplacian L_G = D - A, (n, n)."""
        lap = np.zeros((self.n, self.n))
        for (j, q), w in zip(self.edges, self.weights, strict=True):
            lap[j, j] += w
            lap[q, q] += w
            lap[j, q] -= w
            lap[q, j] -= w
        return lap

    def algebraic_connectivity(self) -> float:
        """lambda_2(L_G), the second-smallest Laplacian eigenvalue (0: disconnected)."""
        if self.n == 1:
            return 0.0
        return float(np.linalg.eigvalsh(self.graph_laplacian())[1])

    def with_k(self, k: float) -> QubitNetwork:
        """The same network with swap gain `k`."""
        if is_concrete(k) and not (np.isfinite(k) and k >= 0):
            raise ValueError(f"`k` (swap gain) must be finite and >= 0, got {k}")
        return eqx.tree_at(lambda m: m.k, self, float(k))

    def local_superoperators(self) -> np.ndarray:
        """(n, 2, 2, 2, 2) S with (L_j rho)[a, b] = sum_cd S[j, a, b, c, d] rho[c, d].

        L_j rho = -i[H_j, rho] + sum_m D[L_jm] rho, the local generator of qubit j.
        """
        eye = np.eye(2)
        out = np.zeros((self.n, 2, 2, 2, 2), dtype=complex)
        for j in range(self.n):
            heff = self.H[j] - 0.5j * sum(
                (L.conj().T @ L for L in self.jump_ops[j]), np.zeros((2, 2))
            )
            s = -1j * np.einsum("ac,bd->abcd", heff, eye)
            s += 1j * np.einsum("ac,bd->abcd", eye, heff.conj())
            for L in self.jump_ops[j]:
                s += np.einsum("ac,bd->abcd", L, L.conj())
            out[j] = s
        return out

    def dense_operators(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """(H, jump_ops) as dense 2^n x 2^n matrices for `mesolve` (small n only).

        The swap term enters as jump operators sqrt(k a_jl) U_jl.
        """
        if self.n > 10:
            raise ValueError(f"dense operators are limited to n <= 10, got n={self.n}")
        H = sum(
            (_embed(self.n, {j: self.H[j]}) for j in range(self.n)),
            np.zeros((2**self.n,) * 2, dtype=complex),
        )
        for j, q, mat in self.couplings:
            H = H + _embed_pair(self.n, j, q, mat)
        jumps = [
            _embed(self.n, {j: L}) for j in range(self.n) for L in self.jump_ops[j]
        ]
        jumps += [
            math.sqrt(self.k * w) * swap_matrix(self.n, j, q)
            for (j, q), w in zip(self.edges, self.weights, strict=True)
            if self.k * w > 0
        ]
        return H, jumps


def _embed(n: int, ops: dict[int, np.ndarray]) -> np.ndarray:
    out = np.ones((1, 1), dtype=complex)
    for j in range(n):
        out = np.kron(out, ops.get(j, np.eye(2)))
    return out


def _embed_pair(n: int, j: int, q: int, mat: np.ndarray) -> np.ndarray:
    """A 4 x 4 operator on qubits (j, l), j the more significant factor."""
    terms = mat.reshape(2, 2, 2, 2)
    out = np.zeros((2**n,) * 2, dtype=complex)
    for a, b, c, d in itertools.product(range(2), repeat=4):
        if terms[a, b, c, d] != 0:
            ej = np.zeros((2, 2))
            ej[a, c] = 1
            el = np.zeros((2, 2))
            el[b, d] = 1
            out += terms[a, b, c, d] * _embed(n, {j: ej, q: el})
    return out


def swap_matrix(n: int, j: int, q: int) -> np.ndarray:
    """The 2^n x 2^n permutation matrix exchanging qubits j and q."""
    perm = list(range(n))
    perm[j], perm[q] = perm[q], perm[j]
    idx = np.arange(2**n).reshape((2,) * n).transpose(perm).reshape(-1)
    return np.eye(2**n, dtype=complex)[idx]
