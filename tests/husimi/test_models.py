"""DampedChain: its exact amplitudes solve the compiled PDE's coherent solution."""

import jax
import jax.numpy as jnp
import numpy as np

from qflow_jax.husimi import apply, coherent_q
from qflow_jax.husimi.models import DampedChain


def test_single_mode_amplitude_is_the_damped_rotation():
    chain = DampedChain(1, omega=1.3, gamma=0.4)
    alpha = chain.alpha(0.7, np.array([2.0 - 1.0j]))
    np.testing.assert_allclose(alpha, (2.0 - 1.0j) * np.exp(-(1.3j + 0.2) * 0.7))


def test_coherent_product_with_exact_amplitudes_solves_the_chain_pde():
    chain = DampedChain(3, omega=1.0, gamma=0.5, hopping=0.4)
    pde, alpha0, t, h = chain.pde(), np.array([1.0, 0.5j, -0.3 + 0.2j]), 0.6, 1e-4
    x = jax.random.normal(jax.random.key(0), (5, 6))
    # dQ/dt by central differences of the exact solution equals L Q
    dq = (
        coherent_q(chain.alpha(t + h, alpha0))(x)
        - coherent_q(chain.alpha(t - h, alpha0))(x)
    ) / (2 * h)
    lq = apply(pde, coherent_q(chain.alpha(t, alpha0)), x)
    np.testing.assert_allclose(dq, lq, rtol=1e-6, atol=1e-9 * float(jnp.max(lq)))
