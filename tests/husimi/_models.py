"""Shared model zoo and Fock-basis references for the Husimi tests."""

from math import comb, factorial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qflow_jax.husimi import a, adag

# Per-mode factors adag^m a^k of the random operators: degree m + k <= 2 per mode, or
# (FULL) up to two creation and two annihilation operators per mode.
DEGREE_2 = [(m, k) for m in range(3) for k in range(3 - m)]
FULL = [(m, k) for m in range(3) for k in range(3)]


def lindbladian(H, jumps, rho):
    out = -1j * (H @ rho - rho @ H)
    for L in jumps:
        LdL = L.conj().T @ L
        out += L @ rho @ L.conj().T - 0.5 * (LdL @ rho + rho @ LdL)
    return out


def random_op(rng, modes, total_degree, exps=DEGREE_2):
    """Random polynomial of per-mode factors from exps, <= total_degree per term."""
    op = 0.0 * a(0)
    for _ in range(4):
        term = complex(rng.normal(), rng.normal()) * 0.3
        left = total_degree
        for j in range(modes):
            m, k = exps[rng.integers(len(exps))]
            m, k = min(m, left), min(k, left - min(m, left))
            left -= m + k
            term = term * adag(j) ** m @ a(j) ** k
        op = op + term
    return op


def models():
    """(name, H, jump_ops, n_modes): every ingredient of docs/physics.md, section 3."""
    rng = np.random.default_rng(7)
    w, g, nth, U, J, F, kappa = 1.3, 0.4, 0.7, 0.9, 0.6, 0.5, 0.35
    out = [
        ("damped", w * adag(0) @ a(0), [g**0.5 * a(0)], 1),
        (
            "thermal",
            w * adag(0) @ a(0),
            [(g * (nth + 1)) ** 0.5 * a(0), (g * nth) ** 0.5 * adag(0)],
            1,
        ),
        ("kerr", U / 2 * adag(0) @ adag(0) @ a(0) @ a(0), [], 1),
        (
            "hopping",
            w * adag(0) @ a(0)
            + 0.7 * adag(1) @ a(1)
            + J * (adag(0) @ a(1) + adag(1) @ a(0)),
            [g**0.5 * a(0), 0.3 * a(1)],
            2,
        ),
        ("drive", w * adag(0) @ a(0) + F * (a(0) + adag(0)), [g**0.5 * a(0)], 1),
        ("two_photon_loss", 0.0 * a(0), [kappa**0.5 * a(0) @ a(0)], 1),
    ]
    # Jumps of total degree <= 2 keep the PDE at order <= 4 (nested forward mode
    # costs 2^order per derivative).
    for modes in (1, 2):
        X = random_op(rng, modes, total_degree=2 * modes)
        jumps = [random_op(rng, modes, total_degree=2)]
        out.append((f"random_{modes}", X + X.dag(), jumps, modes))
    # Full degree: up to a^dag^2 a^2 per mode and total degree 4 per term. One mode
    # stays at PDE order 4; two modes reach order 8 through a0^2 a1^2 rho (...)^dag,
    # which a fixed term guarantees (see SLOW).
    for modes, top in ((1, adag(0) ** 2 @ a(0) ** 2), (2, a(0) ** 2 @ a(1) ** 2)):
        X = random_op(rng, modes, total_degree=4, exps=FULL)
        jumps = [
            random_op(rng, modes, total_degree=4, exps=FULL) + 0.3 * top,
            random_op(rng, modes, total_degree=4, exps=FULL),
        ]
        out.append((f"random_{modes}_full", X + X.dag(), jumps, modes))
    return out


# Order-8 PDEs on R^4: each test compiles nested forward mode 8 deep (about a minute on
# 2 CPU cores), so they run with `-m slow`; so does the two-mode random model of total
# degree 2 (14 s; random_1 and the named two-mode models cover two modes by default).
SLOW = {"random_2_full", "random_2"}


def model_params():
    """models() as pytest params, the SLOW ones marked slow."""
    return [
        pytest.param(*m, id=m[0], marks=[pytest.mark.slow] * (m[0] in SLOW))
        for m in models()
    ]


def max_power(op):
    """Largest power of a(j) or adag(j) on one mode in any term of op."""
    return max((max(m, n) for key in op.terms for _, m, n in key), default=0)


def random_rho(rng, cutoffs, support):
    """Random full-rank density matrix supported on Fock levels < support per mode."""
    small = [support] * len(cutoffs)
    n = int(np.prod(small))
    G = rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n))
    r = G @ G.conj().T
    r /= np.trace(r)
    embed = [np.eye(d)[:, :support] for d in cutoffs]
    E = embed[0]
    for e in embed[1:]:
        E = np.kron(E, e)
    return E @ r @ E.T


def coherent_vec(alpha, cutoffs):
    """Analytic multimode coherent ket |alpha> on the truncated basis."""
    vec = np.ones(1, complex)
    for al, d in zip(alpha, cutoffs, strict=True):
        n = np.arange(d)
        amp = np.exp(-(abs(al) ** 2) / 2) * al**n / np.sqrt([factorial(k) for k in n])
        vec = np.kron(vec, amp)
    return vec


def _level_polys(support):
    """w_n(x, p) = (x + i p)^n / sqrt(n!), n < support, as coefficients of x^a p^b."""
    w = np.zeros((support,) * 3, complex)
    for n in range(support):
        for j in range(n + 1):
            w[n, n - j, j] = comb(n, j) * 1j**j / np.sqrt(factorial(n))
    return w


class GaussPolyQ(eqx.Module):
    """Q(x) = pi^-N exp(-|x|^2) P(x) of a state on Fock levels < support per mode.

    P(x) = sum_mn rho_mn prod_j conj(w_{m_j}) w_{n_j} is a real polynomial of degree
    < 2 support in each coordinate, evaluated by one Horner `lax.scan` per coordinate.
    Under 8 nested forward passes one derivative compiles in ~17 s on 2 CPU cores;
    `q_from_rho` (complex log/angle/gammaln) takes ~4 min and 7 GB at order 6, and
    order 8 did not finish in 10 min (20 GB).
    """

    coeffs: jax.Array  # (2 support - 1,) * 2N, axes x_0, p_0, x_1, ...

    def __init__(self, rho, cutoffs, support):
        n, s = len(cutoffs), support
        full = np.asarray(rho).reshape(*cutoffs, *cutoffs)
        r = full[(slice(0, s),) * (2 * n)]
        if np.linalg.norm(r) < (1 - 1e-12) * np.linalg.norm(full):
            raise ValueError("rho has weight on Fock levels >= support")
        w = _level_polys(s)
        outer = np.einsum("mab,lcd->mlabcd", w.conj(), w)
        T = np.zeros((s, s, 2 * s - 1, 2 * s - 1), complex)
        for i in range(s):
            for j in range(s):
                T[:, :, i : i + s, j : j + s] += outer[:, :, i, j]
        for j in range(n):  # contract (m_j, n_j) of the remaining modes, append (a, b)
            r = np.tensordot(r, T, axes=([0, n - j], [0, 1]))
        assert np.abs(r.imag).max() <= 1e-13 * np.abs(r.real).max()
        self.coeffs = jnp.asarray(r.real)

    def __call__(self, x):
        v = self.coeffs
        for i in range(x.shape[-1]):

            def horner(acc, c, xi=x[i]):
                return acc * xi + c, None

            v, _ = jax.lax.scan(horner, jnp.zeros_like(v[0]), v[::-1])
        return jnp.exp(-jnp.sum(x**2)) * v / jnp.pi ** (x.shape[-1] // 2)
