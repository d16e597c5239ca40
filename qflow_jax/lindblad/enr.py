"""Excitation-number-restricted (ENR) multimode Fock basis with sparse operators.

The ENR basis of `n_modes` = N bosonic modes with at most `max_excitations` = K
quanta is the set of occupation vectors

    { (n_0, ..., n_{N-1}) : n_j >= 0 integer, n_0 + ... + n_{N-1} <= K },

optionally also with n_j < cutoffs[j] (a per-mode Fock dimension). Without cut-offs
it has C(N + K, K) states (5 modes, K = 6: 462; 10 modes, K = 6: 8008), far fewer
than the (K + 1)^N states of the tensor product of (K + 1)-level modes that holds the
same states. It is the basis of QuTiP's `enr_fock`, `enr_destroy` and
`enr_state_dictionaries`, in the same order (see `ENRBasis.states`).

Operators are `qflow_jax.husimi.algebra.BosonOp` polynomials; `ENRBasis.operator`
applies each normal-ordered term to each basis state analytically and keeps the
targets that lie in the basis, which is P A P for the projector P onto the basis.
No tensor-product matrix is ever built. A normal-ordered operator is compressed as
a whole: `operator(A @ B)` is P A B P, which differs from
`operator(A) @ operator(B)` = P A P B P near the boundary sum n_j = K (for example
P a a^dag P vs (P a P)(P a^dag P)); build the polynomial first, then the matrix.
The two agree when B never raises the total number (B P = P B P: number-conserving
or lowering B), e.g. `number(j)` equals `create(j) @ destroy(j)`.

Examples:
    >>> from qflow_jax.husimi.algebra import a, adag
    >>> from qflow_jax.lindblad.enr import ENRBasis
    >>> basis = ENRBasis(3, 2)
    >>> basis.dim
    10
    >>> basis.states[:4].tolist()
    [[0, 0, 0], [0, 0, 1], [0, 0, 2], [0, 1, 0]]
    >>> int(basis.index([1, 1, 0]))
    8
    >>> hop = basis.operator(adag(0) @ a(1) + adag(1) @ a(0), format="dense")
    >>> psi = basis.fock_state([0, 1, 0])
    >>> print(round(float(abs((hop @ psi)[basis.index([1, 0, 0]), 0])), 6))
    1.0
    >>> ket, lost = basis.coherent_product([0.1, 0.2, 0.0])
    >>> ket.shape, f"{lost:.3e}"
    ((10, 1), '2.007e-05')
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse
import scipy.special
from jax.experimental import sparse as jsparse

from qflow_jax.core.checks import check_positive_number
from qflow_jax.husimi.algebra import BosonOp, a, adag

__all__ = ["ENRBasis", "Matrix", "OperatorFormat"]

OperatorFormat = Literal["bcoo", "bcsr", "dense", "scipy"]
Matrix = jsparse.BCOO | jsparse.BCSR | jax.Array | scipy.sparse.csr_array
_FORMATS = ("bcoo", "bcsr", "dense", "scipy")


def _read_only(arr: np.ndarray) -> np.ndarray:
    arr.flags.writeable = False
    return arr


def _check_nonnegative_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"`{name}` must be a non-negative integer, got {type(value).__name__}"
        )
    if value < 0:
        raise ValueError(f"`{name}` must be a non-negative integer, got {value}")
    return int(value)


def _falling(k: np.ndarray, n: int) -> np.ndarray:
    """k (k - 1) ... (k - n + 1) as float64 (1 for n = 0), elementwise."""
    out = np.ones(k.shape, np.float64)
    for i in range(n):
        out *= k - i
    return out


class ENRBasis:
    """The excitation-number-restricted Fock basis of `n_modes` bosonic modes.

    Immutable and hashable (equal bases compare equal, so a basis can be a static
    argument of `jax.jit`); the state table is built eagerly with NumPy on
    construction, outside any trace.

    Args:
        n_modes: N, the number of modes (a positive integer).
        max_excitations: K, the largest total number of quanta sum_j n_j (a
            non-negative integer).
        cutoffs: optional per-mode Fock dimensions, length N: n_j < cutoffs[j].
            None (the default) means no per-mode limit beyond K.

    Attributes:
        n_modes: N.
        max_excitations: K.
        cutoffs: the per-mode dimensions as a tuple of N ints, min(cutoffs[j], K + 1)
            (K + 1 for every mode without cut-offs).
        states: (D, N) read-only int64 array of occupation vectors (see `states`).
        dim: D, the number of basis states.

    Raises:
        TypeError: an argument of the wrong type (the message names it).
        ValueError: an argument out of range (the message names it).

    Examples:
        >>> ENRBasis(5, 6).dim, ENRBasis(10, 6).dim
        (462, 8008)
        >>> ENRBasis(2, 3, cutoffs=[2, 4]).states.tolist()
        [[0, 0], [0, 1], [0, 2], [0, 3], [1, 0], [1, 1], [1, 2]]
    """

    __slots__ = ("_n_modes", "_k", "_cutoffs", "_states", "_offsets", "_counts")

    def __init__(
        self,
        n_modes: int,
        max_excitations: int,
        cutoffs: Sequence[int] | None = None,
    ) -> None:
        check_positive_number(n_modes, "n_modes", integer=True)
        n_modes = int(n_modes)
        k = _check_nonnegative_int(max_excitations, "max_excitations")
        if cutoffs is None:
            cuts = (k + 1,) * n_modes
        else:
            if isinstance(cutoffs, str) or not isinstance(
                cutoffs, Sequence | np.ndarray
            ):
                raise TypeError(
                    f"`cutoffs` must be a sequence of {n_modes} positive integers, "
                    f"got {type(cutoffs).__name__}"
                )
            if len(cutoffs) != n_modes:
                raise ValueError(
                    f"`cutoffs` must have length n_modes = {n_modes}, got "
                    f"{len(cutoffs)}"
                )
            for j, c in enumerate(cutoffs):
                check_positive_number(c, f"cutoffs[{j}]", integer=True)
            cuts = tuple(min(int(c), k + 1) for c in cutoffs)
        set_ = object.__setattr__
        set_(self, "_n_modes", n_modes)
        set_(self, "_k", k)
        set_(self, "_cutoffs", cuts)
        counts = self._completion_counts()
        set_(self, "_counts", _read_only(counts))
        set_(self, "_offsets", _read_only(self._rank_offsets(counts)))
        set_(self, "_states", _read_only(self._enumerate()))

    # --- construction -----------------------------------------------------------

    def _completion_counts(self) -> np.ndarray:
        """counts[j, r]: the number of occupations of modes j..N-1 with sum <= r
        (within the cut-offs), for j in 0..N and r in 0..K; shape (N + 1, K + 1)."""
        n, k = self._n_modes, self._k
        counts = np.zeros((n + 1, k + 1), np.int64)
        counts[n] = 1
        for j in range(n - 1, -1, -1):
            for r in range(k + 1):
                top = min(r, self._cutoffs[j] - 1)
                counts[j, r] = counts[j + 1, r - top : r + 1].sum()
        return counts

    def _rank_offsets(self, counts: np.ndarray) -> np.ndarray:
        """offsets[j, s, v]: how many basis states precede, in lexicographic order,
        those whose modes 0..j-1 sum to s and whose mode j holds v, among states
        sharing modes 0..j-1; shape (N, K + 1, K + 1). The rank of a state is the
        sum over j of offsets[j, s_j, n_j] with s_j = n_0 + ... + n_{j-1}."""
        n, k = self._n_modes, self._k
        offsets = np.zeros((n, k + 1, k + 1), np.int64)
        for j in range(n):
            for s in range(k + 1):
                acc = 0
                for v in range(min(k - s, self._cutoffs[j] - 1) + 1):
                    offsets[j, s, v] = acc
                    acc += counts[j + 1, k - s - v]
        return offsets

    def _enumerate(self) -> np.ndarray:
        """All states in lexicographic order, built mode by mode (prefix-major)."""
        prefix = np.zeros((1, 0), np.int64)
        sums = np.zeros(1, np.int64)
        for j in range(self._n_modes):
            sizes = np.minimum(self._k - sums, self._cutoffs[j] - 1) + 1
            rows = np.repeat(np.arange(len(sums)), sizes)
            starts = np.cumsum(sizes) - sizes
            values = np.arange(rows.size) - np.repeat(starts, sizes)
            prefix = np.concatenate([prefix[rows], values[:, None]], axis=1)
            sums = sums[rows] + values
        return prefix

    # --- identity ---------------------------------------------------------------

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("ENRBasis is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("ENRBasis is immutable")

    def _key(self) -> tuple[int, int, tuple[int, ...]]:
        return (self._n_modes, self._k, self._cutoffs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ENRBasis) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(("ENRBasis", *self._key()))

    def __repr__(self) -> str:
        cuts = (
            ""
            if self._cutoffs == (self._k + 1,) * self._n_modes
            else (f", cutoffs={list(self._cutoffs)}")
        )
        return f"ENRBasis({self._n_modes}, {self._k}{cuts}) (dim {self.dim})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (ENRBasis, (self._n_modes, self._k, list(self._cutoffs)))

    @property
    def n_modes(self) -> int:
        """N, the number of modes."""
        return self._n_modes

    @property
    def max_excitations(self) -> int:
        """K, the largest total number of quanta."""
        return self._k

    @property
    def cutoffs(self) -> tuple[int, ...]:
        """Per-mode dimensions (N,): n_j < cutoffs[j]; K + 1 where not limited."""
        return self._cutoffs

    @property
    def states(self) -> np.ndarray:
        """(D, N) read-only int64 array: row i is the occupation vector of basis
        state i.

        The order is lexicographic with mode 0 most significant, (0,..,0,0),
        (0,..,0,1), ..., (0,..,0,K), (0,..,1,0), ..., (K,0,..,0): the order of QuTiP's
        `enr_state_dictionaries`, and the order in which the states appear in the
        full tensor product of `qflow_jax.operators.tensor` (first mode slowest), so
        restricting a full-space vector or matrix to the basis keeps its order.
        """
        return self._states

    @property
    def dim(self) -> int:
        """D, the number of basis states: C(N + K, K) without cut-offs."""
        return int(self._counts[0, self._k])

    # --- states -----------------------------------------------------------------

    def _valid(self, occ: np.ndarray) -> np.ndarray:
        """(...,) bool: whether each row of the (..., N) int array is in the basis."""
        cuts = np.asarray(self._cutoffs)
        return (
            np.all(occ >= 0, axis=-1)
            & np.all(occ < cuts, axis=-1)
            & (occ.sum(axis=-1) <= self._k)
        )

    def _rank(self, occ: np.ndarray) -> np.ndarray:
        """Basis indices (...,) of (..., N) occupations known to be in the basis."""
        prefix = np.cumsum(occ, axis=-1) - occ
        modes = np.arange(self._n_modes)
        return self._offsets[modes, prefix, occ].sum(axis=-1)

    def _as_occupations(self, occupations: Any, name: str) -> np.ndarray:
        occ = np.asarray(occupations)
        if occ.ndim == 0 or occ.shape[-1] != self._n_modes:
            raise ValueError(
                f"`{name}` must have shape (..., {self._n_modes}) (one occupation per "
                f"mode), got shape {occ.shape}"
            )
        if occ.dtype.kind not in "iuf":
            raise TypeError(f"`{name}` must hold integers, got dtype {occ.dtype}")
        if occ.dtype.kind == "f" and not np.all(np.round(occ) == occ):
            raise ValueError(f"`{name}` must hold integers, got {occupations!r}")
        return occ.astype(np.int64)

    def index(self, occupations: Any) -> np.ndarray:
        """Basis indices of occupation vectors: the inverse of `states`.

        Ranks each row in O(N) by a table of completion counts (no search, no
        dictionary), vectorized over any leading shape.

        Args:
            occupations: (..., N) integers, e.g. rows of `states`.

        Returns:
            (...,) int64 array of indices in [0, D).

        Raises:
            ValueError: a row is not in the basis (too many quanta, a negative or
                cut-off occupation) or has the wrong length.

        Examples:
            >>> basis = ENRBasis(4, 3)
            >>> bool((basis.index(basis.states) == range(basis.dim)).all())
            True
        """
        occ = self._as_occupations(occupations, "occupations")
        ok = self._valid(occ)
        if not np.all(ok):
            bad = occ[~ok][0].tolist()
            raise ValueError(
                f"`occupations` holds {int((~ok).sum())} state(s) outside the basis "
                f"(at most {self._k} quanta, n_j < {list(self._cutoffs)}), e.g. {bad}"
            )
        return self._rank(occ)

    def fock_state(
        self, occupations: Sequence[int], dtype: Any = jnp.complex128
    ) -> jax.Array:
        """The Fock ket |n_0, ..., n_{N-1}> of the basis.

        Args:
            occupations: (N,) integers, a state of the basis.
            dtype: complex dtype of the result.

        Returns:
            (D, 1) JAX array with a single 1.

        Examples:
            >>> ENRBasis(2, 1).fock_state([0, 1]).ravel().real.tolist()
            [0.0, 1.0, 0.0]
        """
        occ = np.asarray(occupations)
        if occ.shape != (self._n_modes,):
            raise ValueError(
                f"`occupations` must have shape ({self._n_modes},), got {occ.shape}"
            )
        i = int(self.index(occ))
        return jnp.zeros((self.dim, 1), dtype).at[i, 0].set(1.0)

    def coherent_product(
        self, alpha: Sequence[complex] | np.ndarray, dtype: Any = jnp.complex128
    ) -> tuple[jax.Array, float]:
        """The product coherent state |alpha_0> x ... x |alpha_{N-1}> in the basis.

        The exact product state has amplitudes prod_j exp(-|alpha_j|^2 / 2)
        alpha_j^n_j / sqrt(n_j!) on every Fock state; its projection P psi onto the
        basis is returned normalized, with the truncated weight 1 - ||P psi||^2, the
        probability of the states left out. That weight is summed from the Poisson
        weights of the left-out states themselves (no 1 - x cancellation): the
        Poisson tail P(Pois(sum_j |alpha_j|^2) > K) of the total number, plus the
        weight of states with at most K quanta but some n_j >= cutoffs[j].

        Args:
            alpha: (N,) complex amplitudes.
            dtype: complex dtype of the ket.

        Returns:
            (ket, truncated): the normalized (D, 1) JAX ket and the truncated weight
            as a float in [0, 1].

        Raises:
            ValueError: `alpha` of the wrong shape or non-finite, or a state so far
                outside the basis that its projection underflows to 0.

        Examples:
            >>> ket, lost = ENRBasis(1, 40).coherent_product([2.0])
            >>> lost < 1e-15, round(float(jnp.linalg.norm(ket)), 12)
            (True, 1.0)
        """
        al = np.asarray(alpha, dtype=complex)
        if al.shape != (self._n_modes,):
            raise ValueError(
                f"`alpha` must have shape ({self._n_modes},), got {al.shape}"
            )
        if not np.all(np.isfinite(al)):
            raise ValueError("`alpha` contains non-finite values (nan or inf)")
        k = self._k
        v = np.arange(k + 1)
        lam = np.abs(al) ** 2
        ket = np.asarray(self._coherent_amplitudes(jnp.asarray(al)))
        norm = float(np.sqrt(np.sum(np.abs(ket) ** 2)))
        if not norm > 0:
            raise ValueError(
                f"the projection of the coherent state with |alpha|^2 = "
                f"{lam.tolist()} onto the basis of at most {k} quanta underflows to 0"
            )
        # left-out weight: Poisson tail of the total number, then, among totals <= K,
        # the mass with some n_j >= cutoffs[j] (a DP over modes: partial sum, flag)
        truncated = float(scipy.special.pdtrc(k, lam.sum()))
        with np.errstate(divide="ignore", invalid="ignore"):  # log 0, 0 * log 0
            log_pow = np.where(v > 0, v * np.log(lam)[:, None], 0.0)
        pmf = np.exp(log_pow - lam[:, None] - scipy.special.gammaln(v + 1))
        inside = np.zeros(k + 1)
        inside[0] = 1.0
        outside = np.zeros(k + 1)
        for j in range(self._n_modes):
            keep = v < self._cutoffs[j]
            new_in, new_out = np.zeros(k + 1), np.zeros(k + 1)
            for n in range(k + 1):
                p = pmf[j, n]
                if p == 0:
                    continue
                new_out[n:] += outside[: k + 1 - n] * p
                (new_in if keep[n] else new_out)[n:] += inside[: k + 1 - n] * p
            inside, outside = new_in, new_out
        truncated += float(outside.sum())
        return jnp.asarray(ket[:, None] / norm, dtype), min(truncated, 1.0)

    def _coherent_amplitudes(self, alpha: jax.Array) -> jax.Array:
        """<n|alpha_0, ..., alpha_{N-1}> for every basis state n: alpha (..., N) ->
        (..., D)."""
        # amp[..., j, v] = exp(-|a_j|^2/2) a_j^v / sqrt(v!), by recursion (no overflow)
        steps = alpha[..., None] / jnp.sqrt(jnp.arange(1, self._k + 1))
        amp = (
            jnp.concatenate(
                [jnp.ones_like(alpha)[..., None], jnp.cumprod(steps, axis=-1)], axis=-1
            )
            * jnp.exp(-(jnp.abs(alpha) ** 2) / 2)[..., None]
        )
        cols = amp[..., np.arange(self._n_modes), self._states]  # (..., D, N)
        return jnp.prod(cols, axis=-1)

    def reduced_density_matrix(self, psi: Any, mode: int) -> jax.Array:
        """The state of one mode, Tr_{other modes} |psi><psi|, of a ket in this
        basis.

        Args:
            psi: (D,) or (D, 1) ket (works on traced kets, e.g. inside an
                `mcsolve` e_fn).
            mode: the mode kept.

        Returns:
            (c, c) density matrix in that mode's Fock basis, c = cutoffs[mode].

        Examples:
            >>> basis = ENRBasis(2, 2)
            >>> rho = basis.reduced_density_matrix(basis.fock_state([1, 0]), 0)
            >>> print(jnp.real(jnp.diag(rho)))
            [0. 1. 0.]
        """
        j = _check_nonnegative_int(mode, "mode")
        if j >= self._n_modes:
            raise ValueError(f"`mode` must be below {self._n_modes}, got {j}")
        ket = jnp.asarray(psi)
        if ket.size != self.dim:
            raise ValueError(
                f"`psi` must have shape ({self.dim},) or ({self.dim}, 1), got "
                f"{np.shape(psi)}"
            )
        # the rest of every basis state (its other occupations) as a row index
        rest, rest_id = np.unique(
            np.delete(self._states, j, axis=1), axis=0, return_inverse=True
        )
        amp = jnp.zeros((len(rest), self._cutoffs[j]), ket.dtype)
        amp = amp.at[rest_id.ravel(), self._states[:, j]].set(ket.reshape(-1))
        return amp.T @ jnp.conj(amp)

    def husimi_q(
        self, kets: Any, alpha: Any, *, batch_size: int = 256
    ) -> tuple[jax.Array, jax.Array]:
        """The Husimi Q function of an ensemble of kets (quantum trajectories) and
        its standard error:

            Q(alpha) = pi^-N mean_i |<alpha|psi_i>|^2,

        <alpha| the product coherent state (its exact amplitudes on the basis
        states; weight outside the basis is absent from the kets anyway).

        Args:
            kets: (ntraj, D) or (ntraj, D, 1) normalized kets in this basis, e.g.
                the states of `mcsolve` at one save time.
            alpha: (M, N) complex points (or (N,) for one point).
            batch_size: points per vectorized chunk (memory M x D x N).

        Returns:
            (Q, stderr), each (M,) (or scalars for one point); stderr is the
            standard error of the mean over the kets (0 for one ket).

        Examples:
            >>> basis = ENRBasis(2, 12)
            >>> ket, _ = basis.coherent_product([1.0, 0.5j])
            >>> q, err = basis.husimi_q(ket[None], [1.0, 0.5j])
            >>> print(round(float(q * jnp.pi**2), 8))  # |<alpha|alpha>|^2 = 1
            1.0
        """
        psi = jnp.asarray(kets)
        if psi.ndim == 3 and psi.shape[-1] == 1:
            psi = psi[..., 0]
        if psi.ndim != 2 or psi.shape[1] != self.dim:
            raise ValueError(
                f"`kets` must have shape (ntraj, {self.dim}) or (ntraj, {self.dim}, "
                f"1), got {np.shape(kets)}"
            )
        al = jnp.asarray(alpha, dtype=jnp.result_type(psi.dtype, jnp.complex64))
        single = al.ndim == 1
        al = al[None] if single else al
        if al.ndim != 2 or al.shape[1] != self._n_modes:
            raise ValueError(
                f"`alpha` must have shape (M, {self._n_modes}) or ({self._n_modes},), "
                f"got {np.shape(alpha)}"
            )
        check_positive_number(batch_size, "batch_size", integer=True)
        weights = jax.lax.map(
            lambda a: jnp.abs(psi @ jnp.conj(self._coherent_amplitudes(a))) ** 2,
            al,
            batch_size=batch_size,
        )  # (M, ntraj)
        n = psi.shape[0]
        norm = jnp.pi**-self._n_modes
        q = norm * weights.mean(-1)
        err = norm * weights.std(-1, ddof=1) / jnp.sqrt(n) if n > 1 else 0 * q
        return (q[0], err[0]) if single else (q, err)

    # --- operators --------------------------------------------------------------

    def _coo(self, op: BosonOp | complex) -> tuple[np.ndarray, ...]:
        """(rows, cols, values) of P op P, duplicates summed, sorted by row then
        column, zeros dropped."""
        if not isinstance(op, BosonOp):
            if isinstance(op, numbers.Number) and not isinstance(op, bool):
                op = BosonOp({(): complex(op)})
            else:
                raise TypeError(
                    f"`op` must be a qflow_jax.husimi.algebra.BosonOp or a number, "
                    f"got {type(op).__name__}"
                )
        if op.n_modes > self._n_modes:
            raise ValueError(
                f"`op` acts on mode {op.n_modes - 1}, outside the basis of "
                f"{self._n_modes} modes"
            )
        states = self._states
        rows, cols, vals = [], [], []
        for key, coeff in op.terms.items():
            amp = np.full(self.dim, coeff, complex)
            target = states.copy()
            for j, m, n in key:
                kj = states[:, j]
                amp *= np.sqrt(_falling(kj, n) * _falling(kj - n + m, m))
                target[:, j] = kj - n + m
            ok = (amp != 0) & self._valid(target)
            rows.append(self._rank(target[ok]))
            cols.append(np.flatnonzero(ok))
            vals.append(amp[ok])
        shape = (self.dim, self.dim)
        if not rows:
            empty = np.zeros(0, np.int64)
            return empty, empty, np.zeros(0, complex)
        mat = scipy.sparse.coo_array(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=shape,
        ).tocsr()
        mat.sum_duplicates()
        mat.eliminate_zeros()
        mat.sort_indices()
        coo = mat.tocoo()
        return coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data

    def operator(
        self,
        op: BosonOp | complex,
        format: OperatorFormat = "bcoo",
        dtype: Any = jnp.complex128,
    ) -> Matrix:
        """The matrix P op P of a boson polynomial in the basis.

        Each normal-ordered term c prod_j a_j^dag^m a_j^n of `op` is applied to every
        basis state analytically, a^n |k> = sqrt(k!/(k-n)!) |k-n> then
        a^dag^m |k'> = sqrt((k'+m)!/k'!) |k'+m>, and only targets inside the basis
        are kept. Cost O(terms x D x N) on the host with NumPy; no tensor-product
        matrix is built. Call it outside `jax.jit` (the result is a constant).

        Formats: "bcoo" (the default), a `jax.experimental.sparse.BCOO` with sorted,
        unique indices and no batch dimensions; "bcsr", a
        `jax.experimental.sparse.BCSR`; "dense", a JAX array; "scipy", a
        `scipy.sparse.csr_array` (NumPy, on the host: QuTiP interop, host-side
        linear algebra). Measured by `benchmarks/enr_matvec.py` (jit, complex128,
        jax 0.10.2, CPU backend on 2 shared CPU cores) for the dissipative
        Bose-Hubbard H_eff of an open chain, median time per product:

        | modes, K (D, stored entries) | rhs     | bcoo    | bcsr    | dense   |
        |------------------------------|---------|---------|---------|---------|
        | 5, 6 (462, 2477)             | (D, 1)  | 14 us   | 17 us   | 196 us  |
        | 5, 6 (462, 2477)             | (D, 64) | 118 us  | 51 us   | 2.2 ms  |
        | 10, 6 (8008, 62061)          | (D, 1)  | 180 us  | 497 us  | 106 ms  |
        | 10, 6 (8008, 62061)          | (D, 64) | 43 ms   | 1.5 ms  | 794 ms  |

        BCOO is fastest for one ket (1.2x and 2.8x ahead of BCSR, 14x and 590x ahead
        of dense) and is the sparse type with the full JAX support (transpose, sums,
        scaling, `sparsify`), so it is the default. For batches of kets (or
        H @ rho) take "bcsr": jit lowers it on the CPU to XLA's CSR kernel, 2.3x and
        30x faster than BCOO at 64 kets, but BCSR has no transpose or sums. Dense
        only pays when the matrix is combined densely anyway (superoperators,
        expm) on small bases.

        Args:
            op: a `qflow_jax.husimi.algebra.BosonOp` on modes < N, or a number
                (that multiple of the identity).
            format: "bcoo", "bcsr", "dense" or "scipy".
            dtype: complex dtype of the entries (not for "scipy": complex128).

        Returns:
            (D, D) matrix in the requested format.

        Raises:
            TypeError: `op` is not a BosonOp or a number.
            ValueError: `op` acts on a mode >= N, or an unknown `format`.

        Examples:
            >>> from qflow_jax.husimi.algebra import a, adag
            >>> b = ENRBasis(2, 2)
            >>> b.operator(adag(0) @ a(0), format="dense").diagonal().real.tolist()
            [0.0, 0.0, 0.0, 1.0, 1.0, 2.0]
        """
        if format not in _FORMATS:
            raise ValueError(f"`format` must be one of {_FORMATS}, got {format!r}")
        rows, cols, vals = self._coo(op)
        shape = (self.dim, self.dim)
        if format == "scipy":
            return scipy.sparse.csr_array((vals, (rows, cols)), shape=shape)
        if format == "dense":
            out = np.zeros(shape, complex)
            out[rows, cols] = vals
            return jnp.asarray(out, dtype)
        if format == "bcsr":
            indptr = np.searchsorted(rows, np.arange(self.dim + 1))
            return jsparse.BCSR(
                (
                    jnp.asarray(vals, dtype),
                    jnp.asarray(cols.astype(np.int32)),
                    jnp.asarray(indptr.astype(np.int32)),
                ),
                shape=shape,
                indices_sorted=True,
                unique_indices=True,
            )
        indices = jnp.asarray(np.stack([rows, cols], axis=1).astype(np.int32))
        return jsparse.BCOO(
            (jnp.asarray(vals, dtype), indices),
            shape=shape,
            indices_sorted=True,
            unique_indices=True,
        )

    def destroy(self, j: int, format: OperatorFormat = "bcoo") -> Matrix:
        """P a_j P, (D, D) in `format` (see `operator`); equals QuTiP's
        `enr_destroy(...)[j]`."""
        return self.operator(a(j), format)

    def create(self, j: int, format: OperatorFormat = "bcoo") -> Matrix:
        """P a_j^dag P, (D, D) in `format`: the adjoint of `destroy(j)`."""
        return self.operator(adag(j), format)

    def number(self, j: int, format: OperatorFormat = "bcoo") -> Matrix:
        """P a_j^dag a_j P = create(j) @ destroy(j), diagonal (D, D) in `format`."""
        return self.operator(adag(j) @ a(j), format)

    def identity(self, format: OperatorFormat = "bcoo") -> Matrix:
        """The (D, D) identity in `format`."""
        return self.operator(BosonOp({(): 1.0}), format)

    # --- the full tensor product ------------------------------------------------

    def full_indices(self, dims: Sequence[int]) -> np.ndarray:
        """Where the basis states sit in the full Fock tensor product.

        Args:
            dims: (N,) per-mode dimensions of the tensor product, first mode most
                significant (as `qflow_jax.operators.tensor`).

        Returns:
            (D,) int64: the full-space index of each basis state, -1 for states with
            some n_j >= dims[j]. Increasing (the orders agree), so
            `A_full[np.ix_(i, i)]` with `i = full_indices(dims)` (all >= 0) is
            P A_full P in the basis.
        """
        dims_t = tuple(dims)
        if len(dims_t) != self._n_modes:
            raise ValueError(
                f"`dims` must have length n_modes = {self._n_modes}, got {len(dims_t)}"
            )
        for j, d in enumerate(dims_t):
            check_positive_number(d, f"dims[{j}]", integer=True)
        dims_a = np.asarray(dims_t, np.int64)
        inside = np.all(self._states < dims_a, axis=1)
        strides = np.cumprod(np.concatenate([dims_a[1:], [1]])[::-1])[::-1]
        return np.where(inside, self._states @ strides, -1)

    def project(self, psi_full: Any, dims: Sequence[int]) -> jax.Array:
        """A full tensor-product ket restricted to the basis (not renormalized).

        Args:
            psi_full: (prod(dims),) or (prod(dims), k) kets of the tensor product.
            dims: (N,) per-mode dimensions, first mode most significant.

        Returns:
            (D,) or (D, k) JAX array: the amplitudes on the basis states (0 on basis
            states that `dims` cannot hold).
        """
        idx = self.full_indices(dims)
        psi = jnp.asarray(psi_full)
        full = int(np.prod(dims))
        if psi.ndim not in (1, 2) or psi.shape[0] != full:
            raise ValueError(
                f"`psi_full` must have shape ({full},) or ({full}, k), got "
                f"{tuple(psi.shape)}"
            )
        out = psi[np.maximum(idx, 0)]
        mask = jnp.asarray(idx >= 0).reshape((-1,) + (1,) * (psi.ndim - 1))
        return jnp.where(mask, out, 0)

    def embed(self, psi: Any, dims: Sequence[int]) -> jax.Array:
        """A basis ket written in the full tensor product (zeros elsewhere).

        Args:
            psi: (D,) or (D, k) kets of the basis.
            dims: (N,) per-mode dimensions, first mode most significant.

        Returns:
            (prod(dims),) or (prod(dims), k) JAX array.

        Raises:
            ValueError: `psi` has weight on a basis state that `dims` cannot hold.
        """
        idx = self.full_indices(dims)
        arr = jnp.asarray(psi)
        if arr.ndim not in (1, 2) or arr.shape[0] != self.dim:
            raise ValueError(
                f"`psi` must have shape ({self.dim},) or ({self.dim}, k), got "
                f"{tuple(arr.shape)}"
            )
        lost = idx < 0
        if lost.any() and bool(jnp.any(arr[np.flatnonzero(lost)] != 0)):
            raise ValueError(
                f"`psi` has weight on basis states that `dims` = {list(dims)} cannot "
                "hold"
            )
        keep = np.flatnonzero(~lost)
        out = jnp.zeros((int(np.prod(dims)),) + arr.shape[1:], arr.dtype)
        return out.at[idx[keep]].set(arr[keep])
