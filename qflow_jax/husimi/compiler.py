"""Lindbladian -> linear PDE for the Husimi Q function (`compile_qpde`).

The PDE is first built in the complex variables (alpha_j, alpha_j^*) as a polynomial
differential operator with derivatives to the right, alpha^a alpha*^b d_alpha^c
d_alpha*^d, composed with [d_alpha, alpha] = 1, and then rewritten in the real
coordinates alpha_j = x_j + i p_j with d_alpha = (d_x - i d_p)/2 and
d_alpha* = (d_x + i d_p)/2.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from math import comb, perm
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from qflow_jax.husimi import kernels
from qflow_jax.husimi.algebra import BosonOp

__all__ = ["QPDE", "compile_qpde"]

# One mode of a complex differential operator: (a, b, c, d) for
# alpha^a alpha*^b d_alpha^c d_alpha*^d.
ModeKey = tuple[int, int, int, int]
ModeOp = dict[ModeKey, complex]
# A real PDE term: derivative counts per coordinate -> {monomial exponents: coeff}.
Terms = tuple[tuple[tuple[int, ...], tuple[tuple[tuple[int, ...], float], ...]], ...]

_RELATIVE_DROP = 1e-13  # floating-point leftovers of exact cancellations


def _compose(A: ModeOp, B: ModeOp) -> ModeOp:
    """Product A o B of one-mode operators, normal-ordered with derivatives right."""
    out: ModeOp = {}
    for (a1, b1, c1, d1), x in A.items():
        for (a2, b2, c2, d2), y in B.items():
            for r in range(min(c1, a2) + 1):
                for s in range(min(d1, b2) + 1):
                    w = comb(c1, r) * perm(a2, r) * comb(d1, s) * perm(b2, s)
                    key = (a1 + a2 - r, b1 + b2 - s, c1 - r + c2, d1 - s + d2)
                    out[key] = out.get(key, 0) + w * x * y
    return out


def _power(A: ModeOp, n: int) -> ModeOp:
    out: ModeOp = {(0, 0, 0, 0): 1.0}
    for _ in range(n):
        out = _compose(out, A)
    return out


@functools.cache
def _mode_superop(m: int, n: int, k: int, ll: int) -> dict:
    """Real form of (a^dag^m a^n) rho (a^dag^k a^l) on one mode.

    Left factors act outwards from rho: a rho <-> (alpha + d_alpha*) Q then
    a^dag <-> alpha*; on the right rho a^dag <-> (alpha* + d_alpha) Q then a <-> alpha.
    Returns {((ex, ep), (dx, dp)): coeff} for x^ex p^ep d_x^dx d_p^dp.
    """
    left = _compose({(0, m, 0, 0): 1.0}, _power({(1, 0, 0, 0): 1, (0, 0, 0, 1): 1}, n))
    right = _compose(
        {(ll, 0, 0, 0): 1.0}, _power({(0, 1, 0, 0): 1, (0, 0, 1, 0): 1}, k)
    )
    out: dict = {}
    for key, c in _compose(left, right).items():
        for rkey, rc in _realify(*key).items():
            out[rkey] = out.get(rkey, 0) + c * rc
    return out


def _binomial_expand(n1: int, s1: complex, n2: int, s2: complex) -> dict:
    """(u + s1 v)^n1 (u + s2 v)^n2 as {(power of u, power of v): coeff}."""
    out: dict = {}
    for i in range(n1 + 1):
        for j in range(n2 + 1):
            key = (n1 + n2 - i - j, i + j)
            out[key] = out.get(key, 0) + comb(n1, i) * comb(n2, j) * s1**i * s2**j
    return out


def _realify(a: int, b: int, c: int, d: int) -> dict:
    poly = _binomial_expand(a, 1j, b, -1j)
    deriv = _binomial_expand(c, -1j, d, 1j)
    scale = 0.5 ** (c + d)
    return {
        (e, dd): pc * dc * scale for e, pc in poly.items() for dd, dc in deriv.items()
    }


def _add_superop(
    acc: dict, coeff: complex, A: BosonOp, B: BosonOp, n_modes: int
) -> None:
    """acc += real PDE of coeff * A rho B."""
    identity = {((0, 0), (0, 0)): 1.0}
    for ka, ca in A.terms.items():
        left = {j: (m, n) for j, m, n in ka}
        for kb, cb in B.terms.items():
            right = {j: (m, n) for j, m, n in kb}
            per_mode = []
            for j in range(n_modes):
                if j in left or j in right:
                    m, n = left.get(j, (0, 0))
                    k, ll = right.get(j, (0, 0))
                    per_mode.append(_mode_superop(m, n, k, ll))
                else:
                    per_mode.append(identity)
            c0 = coeff * ca * cb
            for combo in itertools.product(*(d.items() for d in per_mode)):
                deriv = tuple(v for (_, dd), _ in combo for v in dd)
                expo = tuple(v for (e, _), _ in combo for v in e)
                c = c0
                for _, cm in combo:
                    c = c * cm
                inner = acc.setdefault(deriv, {})
                inner[expo] = inner.get(expo, 0) + c


def _check_op(x: Any, name: str) -> BosonOp:
    if isinstance(x, BosonOp):
        return x
    if isinstance(x, int | float | complex):
        return BosonOp({(): x})
    raise TypeError(
        f"`{name}` must be a BosonOp built from a(j), adag(j) (or a number), got "
        f"{type(x).__name__}"
    )


def compile_qpde(
    H: BosonOp, jump_ops: Sequence[BosonOp] = (), *, n_modes: int | None = None
) -> QPDE:
    """Compiles a Lindbladian into the linear PDE of its Husimi Q function.

    The master equation

        d rho/dt = -i[H, rho] + sum_k (L_k rho L_k^dag - 1/2 {L_k^dag L_k, rho})

    becomes, through the correspondence rules a rho <-> (alpha + d_alpha*) Q,
    a^dag rho <-> alpha* Q, rho a <-> alpha Q, rho a^dag <-> (alpha* + d_alpha) Q,
    the PDE

        dQ/dt = sum_m c_m(x) d^m Q,   x = (x_0, p_0, x_1, p_1, ...),

    alpha_j = x_j + i p_j, with real polynomial coefficients c_m and derivatives d^m
    of any order.

    Args:
        H: Hermitian Hamiltonian, a `BosonOp`.
        jump_ops: jump operators L_k, each a `BosonOp` (rates folded in, e.g.
            `sqrt(g) * a(0)`).
        n_modes: number of modes N (default: the largest mode index used + 1).

    Returns:
        The compiled `QPDE` on R^{2N}.

    Examples:
        >>> from qflow_jax.husimi import a, adag, compile_qpde
        >>> pde = compile_qpde(1.0 * adag(0) @ a(0), [0.5 * a(0)])
        >>> print(pde)  # doctest: +NORMALIZE_WHITESPACE
        dQ/dt = (0.25) Q + (0.125*x0 - p0) d_x0 Q + (x0 + 0.125*p0) d_p0 Q
            + (0.0625) d_x0^2 Q + (0.0625) d_p0^2 Q

        (the damped oscillator, omega = 1, gamma = 0.25)
    """
    H = _check_op(H, "H")
    if isinstance(jump_ops, BosonOp):
        jump_ops = [jump_ops]
    jumps = [_check_op(L, f"jump_ops[{k}]") for k, L in enumerate(jump_ops)]
    if not H.is_hermitian(tol=1e-12 * max([1.0, *map(abs, H.terms.values())])):
        raise ValueError(f"`H` must be Hermitian, got H - H^dag = {H - H.dag()}")
    used = max([H.n_modes, *(L.n_modes for L in jumps)])
    if n_modes is None:
        n_modes = max(used, 1)
    elif isinstance(n_modes, bool) or not isinstance(n_modes, int) or n_modes < used:
        raise ValueError(
            f"`n_modes` must be an integer >= {max(used, 1)} (modes used by H and "
            f"jump_ops), got {n_modes!r}"
        )
    heff = H
    for L in jumps:
        heff = heff - 0.5j * (L.dag() @ L)
    one = BosonOp({(): 1.0})
    acc: dict = {}
    _add_superop(acc, -1j, heff, one, n_modes)
    _add_superop(acc, 1j, one, heff.dag(), n_modes)
    for L in jumps:
        _add_superop(acc, 1.0, L, L.dag(), n_modes)
    scale = max((abs(c) for inner in acc.values() for c in inner.values()), default=0)
    terms = []
    for deriv in sorted(acc, key=lambda d: (sum(d), tuple(-v for v in d))):
        inner = []
        for expo in sorted(acc[deriv], key=lambda e: (sum(e), tuple(-v for v in e))):
            c = acc[deriv][expo]
            if abs(c) <= _RELATIVE_DROP * scale:
                continue
            if abs(c.imag) > 1e-10 * scale:
                raise ValueError(
                    "the compiled PDE has a complex coefficient "
                    f"{c:.3g}; `H` and `jump_ops` do not form a Lindbladian"
                )
            inner.append((expo, float(c.real)))
        if inner:
            terms.append((deriv, tuple(inner)))
    return QPDE(n_modes=n_modes, terms=tuple(terms))


def _coord_name(i: int, latex: bool) -> str:
    letter = "x" if i % 2 == 0 else "p"
    return f"{letter}_{{{i // 2}}}" if latex else f"{letter}{i // 2}"


def _poly_text(poly: Sequence[tuple[tuple[int, ...], float]], latex: bool) -> str:
    parts = []
    for expo, c in poly:
        factors = []
        for i, e in enumerate(expo):
            if e:
                name = _coord_name(i, latex)
                factors.append(name + (f"^{{{e}}}" if latex else f"^{e}") * (e > 1))
        mult = " " if latex else "*"
        if factors and abs(abs(c) - 1) < 1e-15:
            text = ("-" if c < 0 else "") + mult.join(factors)
        else:
            text = mult.join([f"{c:.6g}", *factors])
        parts.append(text)
    return " + ".join(parts).replace("+ -", "- ")


def _deriv_text(deriv: tuple[int, ...], latex: bool) -> str:
    parts = []
    for i, m in enumerate(deriv):
        if m:
            name = _coord_name(i, latex)
            if latex:
                parts.append(
                    r"\partial_{" + name + "}" + (f"^{{{m}}}" if m > 1 else "")
                )
            else:
                parts.append(f"d_{name}" + (f"^{m}" if m > 1 else ""))
    return " ".join(parts)


class QPDE(eqx.Module):
    """A compiled Husimi-Q PDE dQ/dt = sum_m c_m(x) d^m Q on R^{2N}.

    Coordinates are interleaved per mode, x = (x_0, p_0, x_1, p_1, ...) with
    alpha_j = x_j + i p_j. All data are static: the object is hashable and can be
    closed over or passed through `jax.jit`.

    Attributes:
        n_modes: number of bosonic modes N; the PDE lives on R^{2N}.
        terms: ((derivative counts per coordinate, ((monomial exponents, coeff),
            ...)), ...), sorted by derivative order; c_m(x) = sum coeff * x^exponents.
    """

    n_modes: int = eqx.field(static=True)
    terms: Terms = eqx.field(static=True)

    @property
    def dim(self) -> int:
        """Number of real coordinates 2N."""
        return 2 * self.n_modes

    @property
    def max_order(self) -> int:
        """Highest derivative order that appears."""
        return max((sum(d) for d, _ in self.terms), default=0)

    def as_dict(self) -> dict[tuple[int, ...], dict[tuple[int, ...], float]]:
        """{derivative counts: {monomial exponents: coeff}}."""
        return {d: dict(poly) for d, poly in self.terms}

    def diffusion_matrix(self, x: jax.Array) -> jax.Array:
        """Symmetric D(x), (..., 2N, 2N): second-order part sum D_ij d_i d_j Q."""
        x = jnp.asarray(x, dtype=float)
        D = jnp.zeros((*x.shape[:-1], self.dim, self.dim))
        for deriv, poly in self.terms:
            if sum(deriv) != 2:
                continue
            i, j = [k for k, m in enumerate(deriv) for _ in range(m)]
            c = sum(v * jnp.prod(x ** jnp.asarray(e), axis=-1) for e, v in poly)
            half = c if i == j else 0.5 * c
            D = D.at[..., i, j].add(half)
            if i != j:
                D = D.at[..., j, i].add(half)
        return D

    def is_fokker_planck(self, n_samples: int = 512, radius: float = 6.0) -> bool:
        """Whether the PDE is second order with positive semidefinite diffusion.

        A constant diffusion matrix is checked exactly; a state-dependent one at
        `n_samples` fixed random points in the box [-radius, radius]^{2N}.
        """
        if self.max_order > 2:
            return False
        constant = all(
            sum(e) == 0 for d, poly in self.terms if sum(d) == 2 for e, _ in poly
        )
        if constant:
            pts = jnp.zeros((1, self.dim))
        else:
            key = jax.random.PRNGKey(0)
            shape = (n_samples, self.dim)
            pts = jax.random.uniform(key, shape, minval=-radius, maxval=radius)
        D = self.diffusion_matrix(pts)
        scale = float(jnp.max(jnp.abs(D))) if D.size else 0.0
        return bool(jnp.min(jnp.linalg.eigvalsh(D)) >= -1e-12 * max(scale, 1.0))

    def to_text(self) -> str:
        """Plain-text form, e.g. 'dQ/dt = (1) Q + (0.5*x0) d_x0 Q + ...'."""
        parts = []
        for deriv, poly in self.terms:
            d = _deriv_text(deriv, latex=False)
            parts.append(f"({_poly_text(poly, latex=False)}) {d + ' ' if d else ''}Q")
        return "dQ/dt = " + (" + ".join(parts) if parts else "0")

    def to_latex(self) -> str:
        """LaTeX form, e.g. r'\\partial_t Q = \\left(1\\right) Q + ...'."""
        parts = []
        for deriv, poly in self.terms:
            d = _deriv_text(deriv, latex=True)
            parts.append(
                r"\left(" + _poly_text(poly, latex=True) + r"\right) " + d + " Q"
            )
        return r"\partial_t Q = " + (" + ".join(parts) if parts else "0")

    def __str__(self) -> str:
        return self.to_text()

    def apply(self, Q_fn: Any, x: jax.Array) -> jax.Array:
        """(L Q)(x) at a batch of points; see `qflow_jax.husimi.kernels.apply`."""
        return kernels.apply(self, Q_fn, x)

    def dlogq_dt(
        self,
        logq_fn: Any,
        x: jax.Array,
        *,
        trace_estimator: str = "exact",
        num_probes: int = 1,
        key: jax.Array | None = None,
    ) -> jax.Array:
        """(L Q)/Q from log Q; see `qflow_jax.husimi.kernels.dlogq_dt`."""
        return kernels.dlogq_dt(
            self,
            logq_fn,
            x,
            trace_estimator=trace_estimator,
            num_probes=num_probes,
            key=key,
        )
