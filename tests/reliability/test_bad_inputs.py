"""Bad input through the Python API: each case raises the named exception (or
warns) with the argument in the message, before any solve runs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import qflow_jax as qf
from qflow_jax.husimi import a, adag, coherent_q, compile_qpde

NAN = float("nan")


def _flow(**kw):
    flow = qf.NormalizingFlow(dim=2, **kw)
    return flow.init(jax.random.key(0), jnp.zeros((1, 2)))


def _network(**kw):
    args = dict(n=3, edges="path", k=1.0) | kw
    return qf.QubitNetwork(args.pop("n"), args.pop("edges"), args.pop("k"), **args)


def _mesolve(**kw):
    args = (
        dict(
            H=qf.sigmaz(),
            jump_ops=[qf.sigmam()],
            rho0=qf.fock_dm(2, 0),
            tsave=[0.0, 1.0],
        )
        | kw
    )
    return qf.mesolve(
        args.pop("H"), args.pop("jump_ops"), args.pop("rho0"), args.pop("tsave"), **args
    )


def _grid(**kw):
    pde = compile_qpde(adag(0) @ a(0), [0.5 * a(0)])
    args = dict(Q0=coherent_q(1.0), tsave=[0.0, 0.1], grid=qf.Grid(2, 8, 4.0)) | kw
    return qf.solve_grid(pde, args.pop("Q0"), args.pop("tsave"), **args)


CASES = {
    "fidelity of a trace-2 matrix": (
        lambda: qf.fidelity(2 * qf.fock_dm(2, 0), qf.fock_dm(2, 0)),
        ValueError,
        r"`A` must have trace 1",
    ),
    "trace distance of a non-Hermitian matrix": (
        lambda: qf.trace_distance(qf.fock_dm(2, 0), jnp.array([[0.5, 1.0], [0, 0.5]])),
        ValueError,
        r"`B` must be Hermitian",
    ),
    "fidelity of a non-positive matrix": (
        lambda: qf.fidelity(jnp.diag(jnp.array([1.5, -0.5])), qf.fock_dm(2, 0)),
        ValueError,
        r"`A` must be positive semidefinite",
    ),
    "husimi_q of a NaN matrix": (
        lambda: qf.husimi_q(jnp.full((3, 3), jnp.nan), jnp.zeros((1, 1))),
        ValueError,
        r"`rho` contains non-finite",
    ),
    "husimi_q of a trace-2 matrix": (
        lambda: qf.husimi_q(2 * qf.fock_dm(3, 0), jnp.zeros((1, 1))),
        ValueError,
        r"`rho` must have trace 1",
    ),
    "float qubit indices of an edge": (
        lambda: _network(edges=[(0.7, 1.9)]),
        ValueError,
        r"`edges\[0\]` names qubit 0.7; qubit indices are integers",
    ),
    "float qubit index of a coupling": (
        lambda: _network(couplings=[(0, 1.5, "ZZ", 1.0)]),
        ValueError,
        r"`couplings\[0\]` names qubit 1.5",
    ),
    "string qubit index": (
        lambda: _network(edges=[("0", 1)]),
        TypeError,
        r"`edges\[0\]` names qubit '0'",
    ),
    "NaN swap gain": (lambda: _network(k=NAN), ValueError, r"`k` \(swap gain\)"),
    "NaN qubit Hamiltonian": (
        lambda: _network(H=[qf.sigmaz() * NAN] * 3),
        ValueError,
        r"`H\[0\]` contains non-finite",
    ),
    "negative n_layers": (lambda: _flow(n_layers=-2), ValueError, r"`n_layers`"),
    "zero init_scale": (lambda: _flow(init_scale=0.0), ValueError, r"`init_scale`"),
    "negative init_scale": (lambda: _flow(init_scale=-1.0), ValueError, "init_scale"),
    "NaN init_mean": (lambda: _flow(init_mean=(NAN, 0.0)), ValueError, "init_mean"),
    "mesolve: negative rtol": (lambda: _mesolve(rtol=-1e-6), ValueError, r"`rtol`"),
    "mesolve: NaN atol": (lambda: _mesolve(atol=NAN), ValueError, r"`atol`"),
    "mesolve: infinite final time": (
        lambda: _mesolve(tsave=[0.0, np.inf]),
        ValueError,
        r"`tsave` contains non-finite",
    ),
    "mesolve: NaN coefficient value": (
        lambda: _mesolve(H=[qf.sigmaz(), [qf.sigmax(), lambda t: jnp.nan * t]]),
        ValueError,
        r"`H` contains non-finite",
    ),
    "network_mesolve: negative atol": (
        lambda: qf.network_mesolve(_network(), [qf.fock_dm(2, 0)] * 3, [0, 1], atol=-1),
        ValueError,
        r"`atol`",
    ),
    "network_mesolve: trace-2 product factor": (
        lambda: qf.network_mesolve(_network(), [2 * qf.fock_dm(2, 0)] * 3, [0, 1]),
        ValueError,
        r"`states` must have trace 1",
    ),
    "mesolve: non-Hermitian time-dependent term": (
        lambda: _mesolve(H=[qf.sigmaz(), [qf.sigmam(), lambda t: 1.0]]),
        ValueError,
        r"`H` must be Hermitian at t = tsave\[0\] \(H\(t\) with its time-depend",
    ),
    "mesolve: non-Hermitian callable H": (
        lambda: _mesolve(H=lambda t: qf.sigmam()),
        ValueError,
        r"`H` must be Hermitian at t = tsave\[0\]",
    ),
    "mesolve: imaginary coefficient of a Hermitian term": (
        lambda: _mesolve(H=[qf.sigmaz(), [qf.sigmax(), lambda t: 1j]]),
        ValueError,
        r"`H` must be Hermitian",
    ),
    "mesolve: H non-Hermitian only later": (
        lambda: _mesolve(
            H=[qf.sigmaz(), [qf.sigmam(), lambda t: jnp.where(t > 0.3, 1.0, 0.0)]]
        ),
        ValueError,
        r"`H` must be Hermitian at t = ",
    ),
    "mesolve: non-Hermitian rho0": (
        lambda: _mesolve(rho0=jnp.array([[1.0, 1.0], [0.0, 0.0]])),
        ValueError,
        r"`rho0` must be Hermitian",
    ),
    "mesolve: NaN jump operator": (
        lambda: _mesolve(jump_ops=[qf.sigmam() * NAN]),
        ValueError,
        r"`jump_ops\[0\]` contains non-finite",
    ),
    "mesolve: fock_dims of the wrong product": (
        lambda: _mesolve(fock_dims=(3,)),
        ValueError,
        r"`fock_dims` \(3,\) must multiply to the dimension n = 2",
    ),
    "mesolve: float fock_dims": (
        lambda: _mesolve(fock_dims=(2.0,)),
        ValueError,
        r"`fock_dims` must be integers >= 2",
    ),
    "mesolve: fock_modes outside fock_dims": (
        lambda: _mesolve(fock_dims=(2,), fock_modes=(1,)),
        ValueError,
        r"`fock_modes` must be indices into `fock_dims`",
    ),
    "mesolve: zero max_top_population": (
        lambda: _mesolve(fock_dims=(2,), max_top_population=0.0),
        ValueError,
        r"`max_top_population` must be a number > 0",
    ),
    "mesolve: Fock truncation too small": (
        lambda: qf.mesolve(
            qf.number(4), [qf.destroy(4)], qf.fock_dm(4, 3), [0, 1], fock_dims=(4,)
        ),
        ValueError,  # qf.TruncationError
        r"the highest level \(n = 3\) of mode 0 holds 1 at t = 0",
    ),
    "mesolve: zero max_steps": (
        lambda: _mesolve(max_steps=0),
        ValueError,
        r"`max_steps` must be a positive integer",
    ),
    "mesolve: unknown method name": (
        lambda: _mesolve(method="rk45"),
        ValueError,
        r"`method` must be one of",
    ),
    "ptrace: dims that do not multiply to n": (
        lambda: qf.ptrace(qf.fock_dm(4, 0), 0, [3, 2]),
        ValueError,
        r"`dims` \[3, 2\] multiply to 6",
    ),
    "network: edge to a qubit that does not exist": (
        lambda: _network(edges=[(0, 5)]),
        ValueError,
        r"`edges\[0\]` = \(0, 5\) names a qubit outside 0..2",
    ),
    "TDVPSettings: negative step": (
        lambda: qf.TDVPSettings(dt=-0.1),
        ValueError,
        r"`dt` must be > 0.0, got -0.1",
    ),
    "TDVPSettings: zero batch": (
        lambda: qf.TDVPSettings(batch_size=0),
        ValueError,
        r"`batch_size` must be > 0, got 0",
    ),
    "TDVPSettings: Cholesky on the matrix-free S": (
        lambda: qf.TDVPSettings(linear_solver="cholesky", s_builder="matrix_free"),
        ValueError,
        r"`linear_solver='cholesky'` needs the dense S",
    ),
    "EulerKLSettings: zero learning rate": (
        lambda: qf.EulerKLSettings(learning_rate=0.0),
        ValueError,
        r"`learning_rate` must be > 0.0, got 0.0",
    ),
    "solve_grid: unknown scheme": (
        lambda: _grid(scheme="fem"),
        ValueError,
        r"`scheme` must be one of",
    ),
    "solve_grid: NaN Q0": (
        lambda: _grid(Q0=jnp.full((8, 8), jnp.nan)),
        ValueError,
        r"`Q0` contains non-finite",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_raises_naming_the_argument(case):
    call, error, match = CASES[case]
    with pytest.raises(error, match=match):
        call()


def test_truncated_coherent_state_warns():
    with pytest.warns(UserWarning, match=r"loses 0.762 of its weight"):
        qf.coherent_dm(3, 2.0)
    with pytest.warns(UserWarning, match="raise N"):
        qf.coherent(5, 3.0, "analytic")
    with pytest.raises(ValueError, match="`alpha` must be finite"):
        qf.coherent(5, NAN)


def test_run_folder_files_follow_the_umask_and_stale_temporaries_go(tmp_path):
    import os

    from qflow_jax.runs import RunFolder

    (tmp_path / ".tmp-killed.json").write_text("{")  # left by a killed write
    run = RunFolder(tmp_path)
    assert not list(tmp_path.glob(".tmp-*"))
    path = run.write_json("summary.json", {"a": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
    assert not list(tmp_path.glob(".tmp-*"))
