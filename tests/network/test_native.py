"""The compiled CPU kernel of the network right-hand side: against QuTiP's Liouvillian
and the XLA kernel, its derivatives, batching, and the fallback when it cannot build."""

import os
import stat
import warnings

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import qflow_jax as qf
from qflow_jax.network import (
    NetworkVectorField,
    QubitNetwork,
    _native,
    network_mesolve,
    product_state,
)
from tests.helpers import liouvillian, random_network, random_state, vec


def _native_field(net, part="all"):
    assert _native.native_available(), _native.native_reason()
    vf = NetworkVectorField.build(net, part, kernel="native")
    assert vf.kernel == "native"
    return vf


def _generic_network(n, seed):
    """Every qubit with a generic jump (all four row/column flip patterns), a complete
    graph (swaps of every pair of bits, so every in-chunk and chunk-pair case of the
    kernel), and pair couplings with one- and two-bit flip patterns."""
    rng = np.random.default_rng(seed)
    base = random_network(n, seed)
    edges = [(j, q, rng.uniform(0.5, 1.5)) for j in range(n) for q in range(j + 1, n)]
    jumps = [
        [0.3 * (rng.normal(size=(2, 2)) + 1j * rng.normal(size=(2, 2)))]
        for _ in range(n)
    ]
    jumps[0].append(0.2 * np.diag([1.0, -1.0]))  # no flip at all: the (), () pattern
    return QubitNetwork(
        n, edges, k=1.7, H=base.H, jump_ops=jumps, couplings=base.couplings
    )


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_native_equals_dense_liouvillian(n):
    net = _generic_network(n, seed=30 + n) if n > 1 else random_network(1, 31)
    rho = random_state(n, 30 + n)
    ref = (liouvillian(net) @ vec(rho)).reshape(rho.shape, order="F")
    tol = 1e-12 * np.abs(ref).max()
    out = jax.jit(_native_field(net).__call__)(0.0, jnp.asarray(rho), None)
    np.testing.assert_allclose(np.asarray(out), ref, atol=tol)
    split = sum(
        np.asarray(_native_field(net, p)(0.0, jnp.asarray(rho), None))
        for p in ("local", "swap")
    )
    np.testing.assert_allclose(split, ref, atol=tol)


def test_native_equals_xla_complete_graph_n6():
    # every pair of bits swapped: each in-chunk and chunk-pair case of the kernel
    net = _generic_network(6, seed=36)
    rho = jnp.asarray(random_state(6, 36))
    vf = _native_field(net)
    ref = np.asarray(vf.xla_rhs(rho))
    out = np.asarray(vf(0.0, rho, None))
    np.testing.assert_allclose(out, ref, atol=1e-12 * np.abs(ref).max())


def test_native_output_exactly_hermitian_and_equal_to_xla_at_n8():
    net = QubitNetwork(
        8,
        "ring",
        k=5.0,
        H=[(j + 1) / 2 * qf.sigmaz() + 0.3 * qf.sigmax() for j in range(8)],
        jump_ops=[[np.sqrt(0.1) * qf.sigmam()]] * 8,
    )
    rho = jnp.asarray(random_state(8, 8))
    vf = _native_field(net)
    out = np.asarray(vf(0.0, rho, None))
    ref = np.asarray(vf.xla_rhs(rho))
    np.testing.assert_allclose(out, ref, atol=1e-12 * np.abs(ref).max())
    assert np.array_equal(out, out.conj().T)


def test_native_solve_matches_xla_step_for_step():
    net = random_network(4, seed=41, k=3.0)
    rho0 = random_state(4, 41)
    tsave = np.linspace(0.0, 2.0, 5)
    a = network_mesolve(net, rho0, tsave, kernel="native", rtol=1e-8, atol=1e-10)
    b = network_mesolve(net, rho0, tsave, kernel="xla", rtol=1e-8, atol=1e-10)
    assert int(a.stats["num_steps"]) == int(b.stats["num_steps"])
    np.testing.assert_allclose(np.asarray(a.states), np.asarray(b.states), atol=1e-12)


@pytest.mark.filterwarnings("ignore:Complex dtype support")
def test_native_derivatives_equal_xla():
    net = random_network(3, seed=42)
    rho = jnp.asarray(random_state(3, 42))
    native, xla = _native_field(net), NetworkVectorField.build(net)
    rng = np.random.default_rng(0)
    drho = jnp.asarray(random_state(3, 43))
    leaves = [
        jnp.asarray(rng.normal(size=x.shape), dtype=x.dtype)
        for x in jax.tree.leaves(xla)
    ]

    def tangent(vf):
        dvf = jax.tree.unflatten(jax.tree.structure(vf), leaves)
        return jax.jvp(lambda v, r: v(0.0, r, None), (vf, rho), (dvf, drho))[1]

    t_native, t_xla = tangent(native), tangent(xla)
    np.testing.assert_allclose(np.asarray(t_native), np.asarray(t_xla), atol=1e-13)

    # reverse mode through a whole solve against central differences of the native
    # solve (error O(h^2) ~ 1e-10 at h = 1e-5), along a physical direction (the
    # native kernel returns X + X^dag, so it follows Lindbladians only): the
    # Hamiltonian diagonals, the swap rates and rho0, all Hermitian
    Z0 = jnp.asarray(np.kron(qf.sigmaz(), np.eye(4)))
    dvf = jax.tree.map(jnp.zeros_like, native)
    dvf = eqx.tree_at(
        lambda v: (v.diag, v.swap_rates),
        dvf,
        (
            jnp.asarray(rng.normal(size=native.diag.shape), complex),
            jnp.asarray(rng.normal(size=native.swap_rates.shape)),
        ),
    )

    def z_final(s):
        vf = jax.tree.map(lambda x, dx: x + s * dx, native, dvf)
        sol = dfx.diffeqsolve(
            dfx.ODETerm(vf), dfx.Heun(), 0.0, 0.4, 0.1, rho + s * drho
        )
        return jnp.real(jnp.trace(Z0 @ sol.ys[-1]))

    h = 1e-5
    fd = (z_final(h) - z_final(-h)) / (2 * h)
    grad = jax.grad(z_final)(0.0)
    assert abs(float(grad) - float(fd)) < 1e-8 * max(1.0, abs(float(fd)))
    assert abs(float(fd)) > 1e-2  # a direction the final value depends on


def test_native_vmap():
    net = random_network(3, seed=44)
    vf = _native_field(net)
    rhos = jnp.stack([jnp.asarray(random_state(3, s)) for s in range(3)])
    out = jax.vmap(lambda r: vf(0.0, r, None))(rhos)
    for r, o in zip(rhos, out, strict=True):
        np.testing.assert_allclose(np.asarray(o), np.asarray(vf.xla_rhs(r)), atol=1e-12)


def test_kernel_choice_per_method():
    net = random_network(3, seed=45)
    rho0, ts = random_state(3, 1), [0.0, 0.1]
    assert network_mesolve(net, rho0, ts, method="tsit5").kernels == ("native",)
    # implicit iterates are not Hermitian: the XLA kernel, one per IMEX part
    res = network_mesolve(net, rho0, ts, method="kencarp4")
    assert res.kernels == ("xla", "xla")
    with pytest.raises(ValueError, match="kernel='native' needs an explicit method"):
        network_mesolve(
            net, random_state(3, 1), [0.0, 1.0], method="kvaerno5", kernel="native"
        )
    with pytest.raises(ValueError, match="`kernel` must be one of"):
        network_mesolve(net, random_state(3, 1), [0.0, 1.0], kernel="gpu")
    with pytest.raises(ValueError, match="`kernel` must be one of"):
        NetworkVectorField.build(net, kernel="c++")


def test_rho0_made_exactly_hermitian():
    n = 3
    rho = random_state(n, 2)
    rho[0, 1] += 1e-10  # within the check's tolerance
    net = random_network(n, seed=2)
    res = network_mesolve(net, rho, [0.0, 0.1])
    states = np.asarray(res.states)
    assert np.array_equal(states, np.conj(np.swapaxes(states, -1, -2)))
    prod = product_state([qf.fock_dm(2, 0)] * n)
    np.testing.assert_array_equal(
        np.asarray(network_mesolve(net, [qf.fock_dm(2, 0)] * n, [0.0, 0.1]).states)[0],
        np.asarray(prod),
    )


def test_build_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("QFLOW_JAX_CACHE_DIR", str(tmp_path))
    lib = _native._build(_native._compiler())
    assert lib.parent == tmp_path and lib.exists()
    mtime = lib.stat().st_mtime_ns
    assert _native._build(_native._compiler()) == lib
    assert lib.stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == [lib.name]  # no temporary left


def test_fallback_without_compiler_or_when_disabled(tmp_path, monkeypatch):
    monkeypatch.setenv("QFLOW_JAX_NATIVE", "0")
    assert _native._load.__wrapped__() == (False, "disabled by QFLOW_JAX_NATIVE=0")
    monkeypatch.delenv("QFLOW_JAX_NATIVE")

    broken = tmp_path / "broken-c++"
    broken.write_text("#!/bin/sh\necho 'no compiler here' >&2\nexit 1\n")
    broken.chmod(broken.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("CXX", str(broken))
    monkeypatch.setenv("QFLOW_JAX_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.warns(RuntimeWarning, match="XLA kernel is used instead"):
        ok, reason = _native._load.__wrapped__()
    assert not ok and "no compiler here" in reason
    assert not any((tmp_path / "cache").iterdir())  # nothing half-written

    # the network engine then runs on XLA ("auto") or says why ("native")
    monkeypatch.setattr(_native, "_load", lambda: (False, "reason given"))
    net = random_network(2, seed=3)
    assert NetworkVectorField.build(net, kernel="auto").kernel == "xla"
    with pytest.raises(RuntimeError, match="reason given"):
        NetworkVectorField.build(net, kernel="native")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = network_mesolve(net, random_state(2, 3), [0.0, 0.5])
    assert os.environ["CXX"] == str(broken) and res.states.shape == (2, 4, 4)
