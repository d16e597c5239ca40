"""Runs one Euler-KL step, one TDVP theta_dot, a batched mesolve, quantum
trajectories (mcsolve) and a network k-sweep on however many devices XLA_FLAGS gives
this process; prints the results as JSON."""

import json

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import qflow_jax as qf
from qflow_jax.evolution import EulerKLSettings, euler_kl_step, tdvp_theta_dot
from qflow_jax.evolution.tdvp import TDVPSettings
from qflow_jax.flows import NormalizingFlow
from qflow_jax.husimi import a, adag, compile_qpde
from qflow_jax.network import sweep_reduced_states
from qflow_jax.parallel import shard_samples

pde = compile_qpde(adag(0) @ a(0), [a(0)])
flow = NormalizingFlow(dim=2, n_layers=2, hidden=(8,), init_mean=(2.0, 0.0))
params = flow.init(jax.random.key(0), jnp.zeros((1, 2)))
# move off the identity flow so that every parameter matters
theta, unravel = ravel_pytree(params)
params = unravel(theta + 0.05 * jax.random.normal(jax.random.key(1), theta.shape))

st = EulerKLSettings(
    batch_size=64, max_inner_steps=10, min_inner_steps=10, scheme="euler"
)
new, _ = euler_kl_step(flow, pde, params, jax.random.key(2), st)

z = jax.random.normal(jax.random.key(3), (64, 2))
theta_dot, tdvp_diag = tdvp_theta_dot(
    flow, pde, ravel_pytree(params)[0], unravel, z, TDVPSettings(batch_size=64)
)

N = 6
A = qf.destroy(N)
rho0 = jnp.stack([qf.coherent_dm(N, 0.3 * k) for k in range(4)])
res = qf.mesolve(
    A.conj().T @ A, [A], rho0, jnp.linspace(0.0, 1.0, 3), exp_ops=[A.conj().T @ A]
)
# 16 trajectories of a damped cavity from Fock |2>, 4 per device when there are 4
traj = qf.mcsolve(
    A.conj().T @ A,
    [A],
    qf.basis(N, 2),
    jnp.linspace(0.0, 1.0, 3),
    key=jax.random.key(5),
    ntraj=16,
    batch_size=16,
    exp_ops=[A.conj().T @ A],
)
# a k-sweep of a 3-qubit ring with an XX coupling (structured full-state engine)
# and of the same ring without it (reduced-state system): 4 gains, one per device
kw = {"H": [0.5 * (j + 1) * qf.sigmaz() for j in range(3)]}
kw["jump_ops"] = [[0.3 * qf.sigmam()]] * 3
nets = [qf.QubitNetwork(3, "ring", k=k, **kw) for k in (1.0, 3.0, 10.0, 30.0)]
coupled = [
    qf.QubitNetwork(3, "ring", k=k, couplings=[(0, 1, "XX", 0.2)], **kw)
    for k in (1.0, 3.0, 10.0, 30.0)
]
start = [qf.fock_dm(2, 0), qf.fock_dm(2, 1), qf.fock_dm(2, 0)]
ts = jnp.linspace(0.0, 1.0, 3)
sweeps = [
    np.asarray(sweep_reduced_states(n, start, ts, rtol=1e-10, atol=1e-12))
    for n in (nets, coupled)
]
print(
    json.dumps(
        {
            "devices": jax.device_count(),
            "sample_shards": len(shard_samples(z).sharding.device_set),
            "euler_kl": np.asarray(ravel_pytree(new)[0]).tolist(),
            "theta_dot": np.asarray(theta_dot).tolist(),
            "tdvp_residual": float(tdvp_diag["residual"]),
            "mesolve_n": np.asarray(res.expects.real).tolist(),
            "mcsolve_n": np.asarray(traj.expects.real).tolist(),
            "mcsolve_jump_times": np.asarray(traj.jump_times[:, :2]).tolist(),
            "sweep": np.stack(sweeps).real.tolist(),
        }
    )
)
