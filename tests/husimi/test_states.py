import jax.numpy as jnp
import numpy as np
import pytest
import qutip

import qflow_jax  # noqa: F401  (enables float64)
from qflow_jax import coherent, fock_dm, ket2dm, tensor, thermal_dm
from qflow_jax.husimi import (
    alpha_to_real,
    cat_q,
    coherent_q,
    fock_q,
    husimi_q,
    q_from_rho,
    real_to_alpha,
    thermal_q,
)


@pytest.mark.parametrize("n", [5, 60, 80])
def test_husimi_q_equals_qutip_qfunc(n):
    rho = qutip.rand_dm(n, seed=n)
    xv, yv = np.linspace(-4, 4, 9), np.linspace(-3, 3, 7)
    ref = qutip.qfunc(rho, xv, yv, g=2)  # g = 2: alpha = x + i y
    X, Y = np.meshgrid(xv, yv)
    got = husimi_q(rho, (X + 1j * Y)[..., None])
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-14)


def test_husimi_q_large_amplitude_coherent_state():
    # |alpha0| = 6 needs ~60 levels; Q(alpha0) = 1/pi exactly for a coherent state.
    alpha0 = 6.0 * np.exp(0.3j)
    rho = qutip.coherent_dm(100, alpha0)
    alphas = jnp.array([[alpha0], [alpha0 + 0.5], [0.0]])
    got = husimi_q(rho, alphas)
    ref = np.exp(-(np.abs(alphas[:, 0] - alpha0) ** 2)) / np.pi
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-14)


def test_husimi_q_two_modes_against_kron_of_qutip_coherent_states():
    rho = qutip.rand_dm([3, 4], seed=3)
    alphas = np.array([[0.3 + 0.2j, -1.0 + 0.5j], [1.2 - 0.4j, 0.1j]])
    ref = []
    for al in alphas:
        ket = qutip.tensor(
            qutip.coherent(3, al[0], method="analytic"),
            qutip.coherent(4, al[1], method="analytic"),
        )
        ref.append(qutip.expect(rho, ket) / np.pi**2)
    got = husimi_q(rho, alphas, dims=(3, 4))
    np.testing.assert_allclose(got, ref, rtol=1e-12)


def test_initial_conditions_equal_q_of_their_density_matrices():
    x = alpha_to_real(jnp.array([[0.3 + 0.2j, -1.0 + 0.5j], [1.2 - 0.4j, 0.0j]]))
    N = 40
    a0 = jnp.array([1.0 + 0.5j, -0.7j])
    kets = [coherent(N, al, method="analytic") for al in a0]
    cases = [
        (coherent_q(a0), ket2dm(tensor(*kets))),
        (fock_q([2, 0]), tensor(fock_dm(N, 2), fock_dm(N, 0))),
        (thermal_q([0.5, 0.8]), tensor(thermal_dm(N, 0.5), thermal_dm(N, 0.8))),
    ]
    for sign in (1.0, -1.0):
        plus = tensor(*kets)
        minus = tensor(*[coherent(N, -al, method="analytic") for al in a0])
        ket = plus + sign * minus
        cases.append((cat_q(a0, sign), ket2dm(ket / jnp.linalg.norm(ket))))
    for q_fn, rho in cases:
        ref = q_from_rho(rho, (N, N))(x)
        np.testing.assert_allclose(q_fn(x), ref, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(
        real_to_alpha(x), jnp.array([[0.3 + 0.2j, -1.0 + 0.5j], [1.2 - 0.4j, 0.0j]])
    )


def test_husimi_q_validation():
    with pytest.raises(ValueError, match="`dims`"):
        husimi_q(np.eye(6) / 6, jnp.zeros((2, 2)), dims=(2, 2))
    with pytest.raises(ValueError, match="`alphas`"):
        husimi_q(np.eye(6) / 6, jnp.zeros((2, 3)), dims=(2, 3))
