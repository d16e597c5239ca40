"""PINN baseline on the damped oscillator, whose Q stays the Gaussian N(alpha(t), I/2)
with alpha(t) = alpha0 exp(-(i omega + gamma/2) t)."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qflow_jax.apps.pinn import run_pinn, validate_pinn_config
from qflow_jax.husimi import a, adag, coherent_q, compile_qpde
from qflow_jax.husimi.models import DampedChain
from qflow_jax.pinn import LogQNet, PINNSettings, pinn_residual, train_pinn
from qflow_jax.pinn.train import _cdf, _Problem, _sample_x

W, G, A0 = 1.0, 1.0, 2.0
TIMES = (0.0, 1.0, 2.0)


def damped_pde(nth: float = 0.0):
    """H = W a^dag a, L = sqrt(G (nth + 1)) a (and sqrt(G nth) a^dag: thermal bath)."""
    jumps = [math.sqrt(G * (nth + 1)) * a(0)]
    if nth:
        jumps.append(math.sqrt(G * nth) * adag(0))
    return compile_qpde(W * adag(0) @ a(0), jumps)


def exact_alpha(t):
    return DampedChain(1, W, G).alpha(t, [A0])[0]


def exact_logq(nth: float = 0.0):
    """log Q(x, t) from |A0>: a displaced thermal state of occupation
    nth (1 - exp(-G t)), Q = exp(-|alpha - alpha(t)|^2 / s) / (pi s)."""

    def logq(y, t):
        al = A0 * jnp.exp(-(1j * W + G / 2) * t)
        mean = jnp.stack([al.real, al.imag])
        s = 1.0 + nth * (1.0 - jnp.exp(-G * t))
        return -jnp.sum((y - mean) ** 2) / s - jnp.log(jnp.pi * s)

    return logq


def grid(half_width=5.0, n=161):
    u = np.linspace(-half_width, half_width, n)
    X, P = np.meshgrid(u, u, indexing="ij")
    return jnp.asarray(np.stack([X.ravel(), P.ravel()], -1))


# ------------------------------------------------------------ residual formula


@pytest.mark.parametrize("nth", [0.0, 0.5])
def test_residual_vanishes_on_the_exact_solution(nth):
    pde = damped_pde(nth)
    keys = jax.random.split(jax.random.key(0))
    x = jax.random.uniform(keys[0], (200, 2), minval=-5.0, maxval=5.0)
    t = jax.random.uniform(keys[1], (200,), maxval=2.0)
    r = pinn_residual(pde, exact_logq(nth), x, t)
    assert r.shape == (200,)
    # the terms are O(|x|^2) ~ 50: float64 rounding leaves ~1e-14
    assert float(jnp.max(jnp.abs(r))) < 1e-10


def test_residual_detects_a_wrong_solution():
    pde = damped_pde()

    def wrong(y, t):  # rotates the wrong way
        al = A0 * jnp.exp((1j * W - G / 2) * t)
        return -jnp.sum((y - jnp.stack([al.real, al.imag])) ** 2) - jnp.log(jnp.pi)

    x = jax.random.normal(jax.random.key(1), (50, 2))
    r = pinn_residual(pde, wrong, x, 1.0)
    assert float(jnp.max(jnp.abs(r))) > 0.5


def test_residual_checks_its_inputs():
    pde = damped_pde()
    with pytest.raises(ValueError, match="`x`"):
        pinn_residual(pde, exact_logq(), jnp.zeros((4, 3)), 0.0)
    with pytest.raises(ValueError, match="`t`"):
        pinn_residual(pde, exact_logq(), jnp.zeros((4, 2)), jnp.zeros(3))
    with pytest.raises(TypeError, match="`pde`"):
        pinn_residual("pde", exact_logq(), jnp.zeros((4, 2)), 0.0)


# ---------------------------------------------------------------- the network


@pytest.mark.parametrize("envelope", ["isotropic", "gaussian"])
def test_new_network_is_its_normalised_envelope(envelope):
    net = LogQNet(
        dim=2, hidden=(16,), envelope=envelope, init_mean=(1.0, -0.5), init_width=0.7
    )
    params = net.init(jax.random.key(0), jnp.zeros((1, 2)), jnp.zeros(1))
    x = jax.random.normal(jax.random.key(1), (64, 2))
    t = jax.random.uniform(jax.random.key(2), (64,))
    expected = -jnp.sum((x - jnp.array([1.0, -0.5])) ** 2, -1) / (2 * 0.49) - jnp.log(
        2 * jnp.pi * 0.49
    )
    np.testing.assert_allclose(net.apply(params, x, t), expected, atol=1e-12)


@pytest.mark.parametrize("envelope", ["isotropic", "gaussian"])
@pytest.mark.parametrize("activation", ["tanh", "gelu"])
def test_network_decays_for_any_parameters(envelope, activation):
    """Bounded or linearly growing MLP + quadratic envelope: Q is integrable."""
    net = LogQNet(dim=2, hidden=(16, 16), envelope=envelope, activation=activation)
    params = net.init(jax.random.key(0), jnp.zeros((1, 2)), jnp.zeros(1))
    noisy = jax.tree_util.tree_map(
        lambda p: p + jax.random.normal(jax.random.key(3), p.shape), params
    )
    u = jax.random.normal(jax.random.key(4), (32, 2))
    far = 1e3 * u / jnp.linalg.norm(u, axis=-1, keepdims=True)
    assert float(jnp.max(net.apply(noisy, far, 0.5))) < -1e4


# --------------------------------------------------------- settings and inputs


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"hidden": ()}, "hidden"),
        ({"hidden": (32, 0)}, "hidden"),
        ({"hidden": 32}, "hidden"),
        ({"activation": "relu"}, "activation"),
        ({"envelope": "flow"}, "envelope"),
        ({"sampler": "grid"}, "sampler"),
        ({"schedule": "linear"}, "schedule"),
        ({"weighting": "abs"}, "weighting"),
        ({"t_end": 0.0}, "t_end"),
        ({"box_half_width": -1.0}, "box_half_width"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"initial_spread": 0}, "initial_spread"),
        ({"steps": 0}, "steps"),
        ({"n_collocation": 1.5}, "n_collocation"),
        ({"n_norm": True}, "n_norm"),
        ({"weight_norm": -1.0}, "weight_norm"),
        ({"weight_floor": 2.0}, "weight_floor"),
        ({"causal_bins": 0}, "causal_bins"),
        ({"log_floor": float("inf")}, "log_floor"),
        ({"box_center": [[1.0]]}, "box_center"),
        ({"seed": 0.5}, "seed"),
    ],
)
def test_bad_settings_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=rf"`{name}[`\[]"):  # `hidden` or `hidden[1]`
        PINNSettings(**kwargs)


def test_train_pinn_checks_its_inputs():
    pde = damped_pde()
    q0 = coherent_q(A0)
    st = PINNSettings(steps=1)
    with pytest.raises(ValueError, match="exactly one of `Q0`"):
        train_pinn(pde, q0, st, logQ0=lambda x: jnp.log(q0(x)))
    with pytest.raises(ValueError, match="exactly one of `Q0`"):
        train_pinn(pde, None, st)
    with pytest.raises(ValueError, match="`Q0`"):
        train_pinn(pde, lambda x: jnp.ones(x.shape), st)  # (3, 2) for (3, 2) points
    with pytest.raises(ValueError, match="`box_center`"):
        train_pinn(pde, q0, PINNSettings(steps=1, box_center=(0.0, 0.0, 0.0)))
    with pytest.raises(TypeError, match="`settings`"):
        train_pinn(pde, q0, {"steps": 1})
    with pytest.raises(TypeError, match="`pde`"):
        train_pinn(None, q0, st)


def test_initial_sampler_draws_blurred_q0():
    """x = y + spread * noise, y ~ Q0 = N((A0, 0), I/2): mean (A0, 0), variance
    1/2 + spread^2; 20k samples give a standard error ~0.01 on each moment."""
    st = PINNSettings(sampler="initial", initial_spread=0.5)
    pts = grid(5.0, 256)
    logq0 = jnp.log(coherent_q(A0)(pts))
    prob = _Problem(
        net=LogQNet(dim=2),
        pde=damped_pde(),
        settings=st,
        logq0=coherent_q(A0),
        center=jnp.zeros(2),
        pool=pts,
        pool_cdf=_cdf(logq0),
    )
    x = _sample_x(prob, jax.random.key(0), 20_000)
    np.testing.assert_allclose(x.mean(0), [A0, 0.0], atol=0.04)
    np.testing.assert_allclose(x.var(0), 0.5 + 0.25, atol=0.05)


# ------------------------------------------------------------------- training


def accuracy(sol):
    """Relative L2 error of Q on a grid and <n> error at TIMES."""
    pts = grid()
    obs = sol.observables(TIMES)
    rel, dn = [], []
    for k, t in enumerate(TIMES):
        exact = jnp.exp(jax.vmap(lambda y, t=t: exact_logq()(y, t))(pts))
        rel.append(
            float(jnp.linalg.norm(sol.q(pts, t) - exact) / jnp.linalg.norm(exact))
        )
        dn.append(abs(float(obs["n"][k, 0]) - abs(exact_alpha(t)) ** 2))
    return np.array(rel), np.array(dn), obs["norm"]


# The smoke run: 300 steps of `qflow pinn` (run_pinn) on [0, 2], trained once for the
# module; its library-level training history and its run folder are both checked.
SMOKE = {
    "hidden": [32, 32],
    "envelope": "gaussian",
    "steps": 300,
    "learning_rate": 1e-2,
    "schedule": "warmup_cosine",
    "log_every": 150,
}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    config = {
        "name": "pinn_smoke",
        "initial": {"alpha": [[A0.real, A0.imag]]},
        "pinn": SMOKE,
        "times": {"t_end": TIMES[-1], "n_save": len(TIMES)},
        "eval": {"n_grid": 64},
    }
    out = tmp_path_factory.mktemp("pinn_smoke")
    return out, run_pinn(config, out, progress=False)


def test_smoke_training_reduces_the_residual(smoke_run):
    out, _ = smoke_run
    h = np.load(out / "arrays.npz")
    for k in ("loss", "residual", "initial", "norm", "learning_rate", "wall_time"):
        assert h[f"history_{k}"].shape == (SMOKE["steps"],)
    assert np.all(np.diff(h["history_wall_time"]) >= 0)
    assert h["history_train_wall_s"] > 0
    # the box [-5, 5]^2 misses Q0's tail beyond x = 5: erfc(3) / 2 = 1.1e-5
    np.testing.assert_allclose(
        h["history_q0_norm"], 1.0 - math.erfc(3.0) / 2, atol=1e-7
    )
    # the initial envelope is Q0 itself: the residual starts at O(10)
    residual = h["history_residual"]
    assert np.mean(residual[-30:]) < 0.05 * np.mean(residual[:10])


@pytest.mark.slow
def test_default_settings_reach_percent_accuracy():
    sol = train_pinn(damped_pde(), coherent_q(A0), PINNSettings(), jax.random.key(0))
    rel, dn, norm = accuracy(sol)
    # measured: rel L2 <= 0.006, |d<n>| <= 0.002, integral within 0.003 of 1 (seed
    # 0); weight_norm = 1 gave up to 0.016 and 0.013 over two seeds
    assert np.all(rel < 0.02), rel
    assert np.all(dn < 0.02), dn
    np.testing.assert_allclose(norm, 1.0, atol=0.01)


# ------------------------------------------------------------------ run_pinn


@pytest.mark.e2e
def test_run_pinn_reaches_the_accuracy_of_its_settings(smoke_run):
    out, summary = smoke_run
    saved = json.loads((out / "summary.json").read_text())
    assert list(saved)[:6] == [
        "command",
        "status",
        "config",
        "versions",
        "metrics",
        "timings_s",
    ]
    assert saved["command"] == "pinn" and saved["config"]["pinn"]["steps"] == 300
    m = summary["metrics"]
    # 300 steps are far from converged: this run has rel L2 of the Q marginal 0.03,
    # 0.05, 0.07 at t = 0, 1, 2 and |d<n>| 0.09 (on sampled grids over seeds 0-3:
    # rel L2 <= 0.21, |d<n>| <= 0.43); a PINN that stays at Q0 has rel L2 1.2 and
    # |d<n>| 2.5 at t = 1; the default settings reach 0.006 and 0.002 (slow test)
    assert max(r["l2_rel_q"] for r in saved["records"]) < 0.25, saved["records"]
    assert m["max_abs_error_n"] < 0.5, m
    assert m["max_norm_error"] < 0.05
    # the metrics are those of `qflow run`, on the same kind of grid
    assert set(m) >= {"max_rel_error_n", "max_l1_q", "final_kl_grid"}
    assert len(saved["records"]) == 3 and saved["records"][0]["n_ref"] == [
        pytest.approx(abs(A0) ** 2)
    ]
    arrays = np.load(out / "arrays.npz")
    assert arrays["history_residual"].shape == (300,)
    for png in ("loss.png", "observables.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"pinn": {"stepz": 3}}, "pinn.stepz"),
        ({"pinn": {"activation": "relu"}}, "pinn.activation"),
        ({"pinn": {"box_center": [0.0]}}, "pinn.box_center"),
        ({"model": {"modes": 2}}, "initial.alpha"),
    ],
)
def test_bad_run_config_names_the_key(config, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        validate_pinn_config(config)
