"""Contract of every flow layout: invertibility, log-determinants, normalization."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qflow_jax.flows import NormalizingFlow, perturb_params

LAYOUTS = [
    dict(dim=2, coupling="affine"),
    dict(dim=2, coupling="spline", n_bins=6),
    dict(dim=4, coupling="affine", lu_mixing=True),
    dict(dim=4, coupling="spline", lu_mixing=True, n_layers=3),
    dict(dim=4, coupling="affine", scale="diagonal"),
    dict(dim=6, coupling="spline", n_layers=2, hidden=(16,)),
]


# the Jacobian check of the larger layouts (dim 4 and 6, 8 to 11 s each) runs with
# `-m slow`; every layout stays in the other contract tests
SLOW_JACOBIAN = {"spline4", "affine4", "spline6"}


def layout_id(layout):
    return f"{layout['coupling']}{layout['dim']}" + (
        "diag" if layout.get("scale") == "diagonal" else ""
    )


def perturbed(layout, scale=0.1, seed=0):
    """A flow whose parameters are all moved away from the identity start (scale 0.1
    keeps log-determinants within about [-10, 3]; larger moves make affine chains
    numerically singular, which would test the perturbation, not the flow)."""
    flow = NormalizingFlow(**{"hidden": (32, 32), **layout}, init_mean=0.3)
    params = flow.init(jax.random.key(seed), jnp.zeros((1, layout["dim"])))
    return flow, perturb_params(params, jax.random.key(seed + 1), scale)


@pytest.mark.parametrize(
    "layout",
    [
        pytest.param(
            lay,
            id=layout_id(lay),
            marks=[pytest.mark.slow] * (layout_id(lay) in SLOW_JACOBIAN),
        )
        for lay in LAYOUTS
    ],
)
def test_inverse_and_log_det_against_jacobian(layout):
    flow, params = perturbed(layout)
    d = layout["dim"]
    z = 1.5 * jax.random.normal(jax.random.key(3), (8, d))
    apply = jax.jit(flow.apply, static_argnames="method")  # splines: slow eagerly
    x, ld_fwd = apply(params, z, method=NormalizingFlow.forward_and_log_det)
    z_back, ld_inv = apply(params, x, method=NormalizingFlow.inverse_and_log_det)
    # splines invert by solving a quadratic per bin: ~1e-10 in double precision
    np.testing.assert_allclose(z_back, z, atol=1e-8)
    np.testing.assert_allclose(ld_inv, -ld_fwd, atol=1e-8)

    def fwd(zi):
        return flow.apply(params, zi, method=NormalizingFlow.forward_and_log_det)[0]

    _, slogdet = jnp.linalg.slogdet(jax.jit(jax.vmap(jax.jacfwd(fwd)))(z))
    np.testing.assert_allclose(ld_fwd, slogdet, atol=1e-9)
    # log q(x) = log N(z; 0, I) - log|det df/dz|
    logq = apply(params, x)
    base = -0.5 * jnp.sum(z**2, -1) - 0.5 * d * jnp.log(2 * jnp.pi)
    np.testing.assert_allclose(logq, base - ld_fwd, atol=1e-9)


@pytest.mark.parametrize("layout", LAYOUTS[:5], ids=layout_id)
def test_flow_integrates_to_one(layout):
    # Importance sampling from a wide Gaussian p: E_p[q/p] = integral of q = 1.
    # The weights need q finite at p's samples out to |y| ~ 15: a move of 0.03 keeps
    # the inverse log-determinants there within [-7, 6], where one of 0.1 lets a
    # random affine chain's reach 1e303 (a property of the perturbation).
    flow, params = perturbed(layout, scale=0.03)
    d, n, width = layout["dim"], 100_000, 3.0
    y = width * jax.random.normal(jax.random.key(7), (n, d))
    logp = -0.5 * jnp.sum((y / width) ** 2, -1) - d * jnp.log(
        width * jnp.sqrt(2 * jnp.pi)
    )
    w = jnp.exp(jax.jit(flow.apply)(params, y) - logp)
    mean, err = float(w.mean()), float(w.std() / np.sqrt(n))
    assert abs(mean - 1.0) < 5 * err + 1e-3, (mean, err)


def test_diagonal_scale_has_2d_gaussian_parameters():
    flow = NormalizingFlow(dim=6, n_layers=0, scale="diagonal", init_scale=0.5)
    params = flow.init(jax.random.key(0), jnp.zeros((1, 6)))
    assert sorted(params["params"]) == ["log_chol_diag", "mean"]
    x = jax.random.normal(jax.random.key(1), (16, 6))
    expected = -0.5 * jnp.sum((x / 0.5) ** 2, -1) - 6 * jnp.log(
        0.5 * jnp.sqrt(2 * jnp.pi)
    )
    np.testing.assert_allclose(flow.apply(params, x), expected, atol=1e-12)
    with pytest.raises(ValueError, match="`scale` must be 'cholesky' or 'diagonal'"):
        NormalizingFlow(dim=2, scale="full").init(jax.random.key(0), jnp.zeros((1, 2)))


def test_new_flow_is_the_initial_gaussian():
    flow = NormalizingFlow(
        dim=4, coupling="spline", lu_mixing=True, init_mean=1.0, init_scale=0.5
    )
    params = flow.init(jax.random.key(0), jnp.zeros((1, 4)))
    x = jax.random.normal(jax.random.key(1), (16, 4))
    expected = -0.5 * jnp.sum(((x - 1.0) / 0.5) ** 2, -1) - 4 * jnp.log(
        0.5 * jnp.sqrt(2 * jnp.pi)
    )
    np.testing.assert_allclose(flow.apply(params, x), expected, atol=1e-12)


def test_sampling_is_batched_and_jittable():
    flow = NormalizingFlow(dim=40, n_layers=2, hidden=(32,))
    params = flow.init(jax.random.key(0), jnp.zeros((1, 40)))
    draw = jax.jit(
        lambda p, k: flow.apply(p, k, 512, method=NormalizingFlow.sample_and_log_prob)
    )
    x, logq = draw(params, jax.random.key(1))
    assert x.shape == (512, 40) and logq.shape == (512,)
    np.testing.assert_allclose(logq, flow.apply(params, x), atol=1e-10)
    # identity start: standard normal samples
    assert abs(float(x.std()) - 1.0) < 0.02


def test_bad_layouts_are_rejected():
    with pytest.raises(ValueError, match="`dim` must be >= 2"):
        NormalizingFlow(dim=1).init(jax.random.key(0), jnp.zeros((1, 1)))
    with pytest.raises(ValueError, match="`coupling`"):
        NormalizingFlow(dim=2, coupling="maf").init(
            jax.random.key(0), jnp.zeros((1, 2))
        )
