"""The network Lindbladian on the full 2^n x 2^n density matrix, never built densely.

Every operator term is split by the bit-flip pattern it applies: a term
A[x, x ^ f] rho[r ^ f, c] multiplies rho, with the bits f of its row index flipped,
by a coefficient that depends on the row index only. Terms of equal pattern share one
coefficient vector of length 2^n, the diagonal of all Hamiltonians collapses into one
outer sum, and a swap permutes the row and the column indices. So the right-hand side
is a single elementwise expression of O(terms) permuted reads of rho: O(terms x 4^n)
work, one pass of output, no 2^n x 2^n operator.

On the CPU the same terms also run as a compiled kernel (`kernel="native"`,
`_native_rhs.cc`), which reads rho by whole rows only and gets the column side from
rho = rho^dag: XLA:CPU turns every column permutation into a gather at about four
times the cost of a row read, which kept its fused pass at about 4.7x the memory
floor at n = 8.
"""

from __future__ import annotations

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from qflow_jax.core.checks import is_concrete
from qflow_jax.network import _native
from qflow_jax.network.model import QubitNetwork

__all__ = ["KERNELS", "NetworkVectorField", "partial_traces"]

KERNELS = ("xla", "native", "auto")


def _bits(n: int) -> np.ndarray:
    """(2^n, n): bit j of index r, qubit 0 most significant."""
    return (np.arange(2**n)[:, None] >> (n - 1 - np.arange(n))[None, :]) & 1


def _flip_rows(x: jax.Array, qubits: tuple[int, ...]) -> jax.Array:
    N = x.shape[0]
    for j in qubits:
        x = jnp.flip(x.reshape(2**j, 2, -1), axis=1).reshape(N, N)
    return x


def _flip_index(n: int, qubits: tuple[int, ...]) -> np.ndarray:
    """r ^ f for every index r: the bits of `qubits` flipped."""
    return np.arange(2**n) ^ sum(1 << (n - 1 - j) for j in qubits)


def _swap_index(n: int, j: int, q: int) -> np.ndarray:
    """The index permutation of the swap of qubits j and q."""
    bits = _bits(n)
    differ = bits[:, j] ^ bits[:, q]
    return np.arange(2**n) ^ differ * ((1 << (n - 1 - j)) | (1 << (n - 1 - q)))


def partial_traces(rho: jax.Array, n: int) -> jax.Array:
    """(..., 2^n, 2^n) -> (..., n, 2, 2): the reduced state of every qubit.

    rho_j[a, b] sums rho[r, r'] over the pairs that differ at most in bit j, so only
    the diagonal and the n diagonals rho[r, r ^ f_j] are read: O(n 2^n) entries,
    not O(n 4^n).

    Examples:
        >>> from qflow_jax.network import product_state
        >>> partial_traces(product_state([qf.fock_dm(2, 0)] * 3), 3).shape
        (3, 2, 2)
    """
    r = np.arange(2**n)
    flips = (1 << (n - 1 - np.arange(n)))[:, None]
    diag = rho[..., r, r]  # (..., N)
    off = rho[..., r, r ^ flips]  # (..., n, N): rho[r, r ^ f_j]
    ones = _bits(n).T.astype(float)  # (n, N): bit j of r
    zeros = 1.0 - ones
    p00 = jnp.einsum("...r,jr->...j", diag, zeros)
    p11 = jnp.einsum("...r,jr->...j", diag, ones)
    p01 = jnp.einsum("...jr,jr->...j", off, zeros)
    p10 = jnp.einsum("...jr,jr->...j", off, ones)
    return jnp.stack(
        [jnp.stack([p00, p01], axis=-1), jnp.stack([p10, p11], axis=-1)], axis=-2
    )


class NetworkVectorField(eqx.Module):
    r"""d rho/dt for a `QubitNetwork`, as a diffrax vector field on complex (2^n, 2^n).

        d rho/dt = D o rho + sum_f (c_f[r] rho[r^f, c] + c'_f[c] rho[r, c^f])
                   + sum_m u_m[r] v_m[c] rho[r^fr_m, c^fc_m]
                   + k sum_e a_e (U_e rho U_e - rho)

    D[r, c] = -i d[r] + i conj(d[c]) carries the diagonal of Heff = H - i/2 sum L^dag L,
    c_f the part of -i Heff that flips the bits f, u_m v_m the jump terms L rho L^dag.

    `part` selects "all" terms, "local" (everything but the swaps) or "swap" (the
    swap term alone), so that an IMEX solver can treat the stiff swap part implicitly.

    `kernel` selects how it is computed: "xla" (one fused XLA expression, any
    platform, any rho) or "native" (the compiled CPU kernel of `_native_rhs.cc`,
    about 2-3x faster on a CPU; on other platforms the XLA expression runs). The
    native kernel takes rho = rho^dag: it builds the row side X of every term and
    returns X + X^dag, so on a non-Hermitian rho it gives L of the Hermitian part
    plus a wrong anti-Hermitian part. Every density matrix and every stage of an
    explicit Runge-Kutta step is Hermitian, which is where `network_mesolve` uses
    it. Derivatives go through the XLA expression (the native kernel has no
    transpose), so `jax.grad` and `jax.jvp` work with either kernel.

    Examples:
        >>> net = qf.QubitNetwork(3, "path", k=2.0, jump_ops=[[qf.sigmam()]] * 3)
        >>> vf = NetworkVectorField.build(net)
        >>> drho = vf(0.0, jnp.asarray(qf.tensor(*[qf.fock_dm(2, 0)] * 3)), None)
        >>> print(round(abs(complex(jnp.trace(drho))), 12))  # trace preserved
        0.0
    """

    n: int = eqx.field(static=True)
    flip_patterns: tuple[tuple[int, ...], ...] = eqx.field(static=True)
    jump_patterns: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...] = eqx.field(
        static=True
    )
    jump_qubits: tuple[int, ...] = eqx.field(static=True)
    edges: tuple[tuple[int, int], ...] = eqx.field(static=True)
    part: str = eqx.field(static=True)
    kernel: str = eqx.field(static=True)
    diag: jax.Array
    flip_coeffs: jax.Array
    jump_row: jax.Array
    jump_col: jax.Array
    swap_rates: jax.Array

    @classmethod
    def build(
        cls, network: QubitNetwork, part: str = "all", kernel: str = "xla"
    ) -> NetworkVectorField:
        """Precomputes the coefficient vectors of `network`: NumPy work for a
        concrete network, jax.numpy for one with traced parameters (inside jit or
        grad), where every flip pattern a term could have is kept (its zeros are not
        known at trace time).

        `kernel`: "xla", "native" (an error when the compiled kernel cannot be
        built, with the reason) or "auto" (native where it is available).
        """
        if part not in ("all", "local", "swap"):
            raise ValueError(f"`part` must be 'all', 'local' or 'swap', got {part!r}")
        if kernel not in KERNELS:
            raise ValueError(f"`kernel` must be one of {KERNELS}, got {kernel!r}")
        if kernel == "native" and not _native.native_available():
            raise RuntimeError(
                f"kernel='native': the compiled kernel is not available "
                f"({_native.native_reason()}); use kernel='xla' or 'auto'"
            )
        if kernel == "auto":
            kernel = "native" if _native.native_available() else "xla"
        n, N = network.n, 2**network.n
        bits = _bits(n)
        traced = not is_concrete(network)
        xp = jnp if traced else np

        def nonzero(c):
            return traced or bool(np.any(c != 0))

        terms: list[tuple[tuple[int, ...], np.ndarray]] = []
        for j in range(n):
            heff = network.H[j] - 0.5j * sum(
                (L.conj().T @ L for L in network.jump_ops[j]), xp.zeros((2, 2))
            )
            terms.append(((j,), heff))
        terms += [((j, q), mat) for j, q, mat in network.couplings]

        by_pattern: dict[tuple[int, ...], np.ndarray] = {}
        for qubits, mat in terms:
            nq = len(qubits)
            x = np.zeros(N, dtype=int)
            for b, j in enumerate(qubits):
                x |= bits[:, j] << (nq - 1 - b)
            for f in range(2**nq):
                coeff = mat[x, x ^ f]
                if not nonzero(coeff):
                    continue
                pattern = tuple(
                    sorted(j for b, j in enumerate(qubits) if f >> (nq - 1 - b) & 1)
                )
                by_pattern[pattern] = by_pattern.get(pattern, 0) + coeff
        d = by_pattern.pop((), xp.zeros(N, dtype=complex))
        patterns = tuple(sorted(by_pattern, key=lambda p: (len(p), p)))
        flip = xp.stack([-1j * by_pattern[p] for p in patterns]) if patterns else None

        jump_patterns, jump_qubits, rows, cols = [], [], [], []
        for j in range(n):
            for L in network.jump_ops[j]:
                u = [L[bits[:, j], bits[:, j] ^ f] for f in (0, 1)]
                for fr, fc in itertools.product((0, 1), repeat=2):
                    if nonzero(u[fr]) and nonzero(u[fc]):
                        jump_patterns.append(((j,) * fr, (j,) * fc))
                        jump_qubits.append(j)
                        rows.append(u[fr])
                        cols.append(u[fc].conj())

        rates = network.k * network.weights
        if part == "swap":
            d = np.zeros(N, dtype=complex)
            patterns, flip, jump_patterns, rows, cols = (), None, [], [], []
            jump_qubits = []
        if part == "local":
            rates = xp.zeros(0)
        edges = network.edges if part != "local" else ()
        return cls(
            n=n,
            flip_patterns=patterns,
            jump_patterns=tuple(jump_patterns),
            jump_qubits=tuple(jump_qubits),
            edges=edges,
            part=part,
            kernel=kernel,
            diag=jnp.asarray(d, dtype=jnp.complex128),
            flip_coeffs=jnp.asarray(
                flip if flip is not None else np.zeros((0, N)), dtype=jnp.complex128
            ),
            jump_row=_stack_rows(xp, rows, N),
            jump_col=_stack_rows(xp, cols, N),
            swap_rates=jnp.asarray(rates, dtype=jnp.float64),
        )

    def __call__(self, t: jax.Array, rho: jax.Array, args: object) -> jax.Array:
        if self.kernel == "native" and rho.dtype == jnp.complex128:
            return jax.lax.platform_dependent(
                self, rho, cpu=_native_rhs, default=NetworkVectorField.xla_rhs
            )
        return self.xla_rhs(rho)

    def xla_rhs(self, rho: jax.Array) -> jax.Array:
        """d rho/dt as one fused XLA expression (any platform, any rho)."""
        # Column permutations are gathers with a constant index vector: a reshaped
        # flip or transpose of the minor axis inside the fused sum keeps XLA:CPU from
        # vectorising the whole loop (1.6x slower at n = 8). Row flips stay reshapes.
        # Every (2^n, 2^n) product involves rho: an outer product of two coefficient
        # vectors would be loop-invariant in a solver's loop, and XLA would hoist it
        # out of the loop into one state-sized buffer per term.
        n = self.n
        d = -1j * self.diag
        const = -jnp.sum(self.swap_rates)
        out = d[:, None] * rho + (jnp.conj(d)[None, :] + const) * rho
        for i, p in enumerate(self.flip_patterns):
            c = self.flip_coeffs[i]
            out = out + c[:, None] * _flip_rows(rho, p)
            out = out + jnp.conj(c)[None, :] * rho[:, _flip_index(n, p)]
        for i, (pr, pc) in enumerate(self.jump_patterns):
            term = _flip_rows(rho, pr)
            term = term[:, _flip_index(n, pc)] if pc else term
            out = out + self.jump_row[i][:, None] * (self.jump_col[i][None, :] * term)
        for i, (j, q) in enumerate(self.edges):
            perm = _swap_index(n, j, q)
            out = out + self.swap_rates[i] * rho[perm][:, perm]
        return out


@jax.custom_jvp
def _native_rhs(vf: NetworkVectorField, rho: jax.Array) -> jax.Array:
    """d rho/dt by the compiled CPU kernel (rho Hermitian; see `NetworkVectorField`)."""
    n = vf.n
    bit = [1 << (n - 1 - j) for j in range(n)]

    def masks(rows: list[list[int]], width: int) -> np.ndarray:
        return np.array(rows, dtype=np.int64).reshape(-1, width)

    flip_masks = masks([[sum(bit[j] for j in p)] for p in vf.flip_patterns], 1)
    jump_masks = masks(
        [
            [bit[q], len(pr), len(pc)]
            for q, (pr, pc) in zip(vf.jump_qubits, vf.jump_patterns, strict=True)
        ],
        3,
    )
    edge_masks = masks([sorted((bit[j], bit[q])) for j, q in vf.edges], 2)
    # the column factor of a jump depends on its qubit's bit of c only: its values
    # at c = 0 and at c = that bit
    cols = np.stack([np.zeros_like(jump_masks[:, 0]), jump_masks[:, 0]], axis=1)
    jump_col = jnp.take_along_axis(vf.jump_col, cols, axis=1)
    half_const = -0.5 * jnp.sum(vf.swap_rates)
    call = jax.ffi.ffi_call(
        _native.TARGET,
        jax.ShapeDtypeStruct(rho.shape, rho.dtype),
        vmap_method="sequential",
    )
    return call(
        rho,
        -1j * vf.diag + half_const,
        vf.flip_coeffs,
        flip_masks[:, 0],
        0.5 * vf.jump_row,
        jump_col,
        jump_masks,
        0.5 * vf.swap_rates,
        edge_masks,
    )


@_native_rhs.defjvp
def _native_rhs_jvp(primals, tangents):
    out = _native_rhs(*primals)
    _, tangent = jax.jvp(lambda vf, rho: vf.xla_rhs(rho), primals, tangents)
    return out, tangent


def _stack_rows(xp, rows: list, N: int) -> jax.Array:
    stacked = xp.stack(rows) if rows else xp.zeros((0, N))
    return jnp.asarray(stacked, dtype=jnp.complex128)
