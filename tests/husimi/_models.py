"""Shared model zoo and Fock-basis references for the Husimi tests."""

from math import factorial

import numpy as np

from qflow_jax.husimi import a, adag


def lindbladian(H, jumps, rho):
    out = -1j * (H @ rho - rho @ H)
    for L in jumps:
        LdL = L.conj().T @ L
        out += L @ rho @ L.conj().T - 0.5 * (LdL @ rho + rho @ LdL)
    return out


def random_op(rng, modes, total_degree):
    """Random polynomial of degree <= 2 per mode and <= total_degree per term."""
    op = 0.0 * a(0)
    exps = [(m, k) for m in range(3) for k in range(3 - m)]
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
    """(name, H, jump_ops, n_modes): every ingredient of PHYSICS.md section 3."""
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
    return out


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
