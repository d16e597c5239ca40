"""Memory of the full-state network engine: the estimate against the compiled
program, the buffer count, the refusal before allocating."""

import jax.numpy as jnp
import numpy as np
import pytest

import qflow_jax as qf
from qflow_jax.core.memory import InsufficientMemoryError
from qflow_jax.network import QubitNetwork, network_memory_estimate, network_mesolve
from qflow_jax.network import solve as network_solve
from qflow_jax.network.solve import _lower_network


def _ring(n):
    return QubitNetwork(
        n,
        "ring",
        k=4.0,
        H=[(j + 1) / 2 * qf.sigmaz() + 0.3 * qf.sigmax() for j in range(n)],
        jump_ops=[[0.3 * qf.sigmam()] for _ in range(n)],
    )


def _rho0(n):
    return [qf.fock_dm(2, j % 2) for j in range(n)]


def _compiled_bytes(n, nt, **kwargs):
    """Peak bytes of the compiled solve: temporaries + arguments + outputs - the
    donated arguments (XLA's own count of what it allocates)."""
    lowered = _lower_network(_ring(n), _rho0(n), jnp.linspace(0, 5, nt), **kwargs)
    m = lowered.compile().memory_analysis()
    return (
        m.temp_size_in_bytes
        + m.argument_size_in_bytes
        + m.output_size_in_bytes
        - m.alias_size_in_bytes
    )


@pytest.mark.parametrize(
    ("n", "kernel", "save_states"), [(8, "auto", False), (9, "xla", True)]
)
def test_estimate_and_buffer_count_match_the_compiled_solve(n, kernel, save_states):
    nt = 6
    measured = _compiled_bytes(n, nt, save_states=save_states, kernel=kernel)
    est = network_memory_estimate(n, nt=nt, save_states=save_states)
    # the estimate counts state-sized buffers only: within 30% of XLA's count
    assert abs(est.bytes - measured) <= 0.3 * measured, (est, measured)
    # the state (donated: also the final state), 7 Tsit5 stages, the stage input,
    # the error estimate, a copy of the first stage; none per term of the field
    # (the XLA kernel's coefficient products are not hoisted out of the loop)
    saved = nt if save_states else 0
    assert measured / (16 * 4**n) <= 11.2 + saved
    assert est.buffers == 11 + saved


def test_estimate_counts_saved_states_and_exp_ops():
    base = network_memory_estimate(12, nt=51, save_states=False)
    assert base.buffers == 11 and base.state_bytes == 16 * 4**12
    full = network_memory_estimate(12, nt=51, save_states=True, n_exp_ops=2)
    assert full.buffers == base.buffers + 51 + 2
    assert network_memory_estimate(12, "kvaerno5", nt=51).buffers > 100
    with pytest.raises(ValueError, match="`n` must be a positive integer"):
        network_memory_estimate(0)


def test_refuses_before_allocating(monkeypatch):
    monkeypatch.setattr(network_solve, "available_memory", lambda: 800 * 2**10)
    net = _ring(6)  # 64 KiB per state: 11 + 3 saved states > 800 KiB > 11
    with pytest.raises(ValueError, match="needs about") as info:
        network_mesolve(net, _rho0(6), [0.0, 0.5, 1.0])
    msg = str(info.value)
    assert isinstance(info.value, InsufficientMemoryError)
    assert isinstance(info.value, MemoryError)
    for part in (
        "n=6 qubits",
        "14 buffers of 0.0625 MiB",
        "more than the 0.781 MiB available (host RAM",
        "save_states=False",
        "fewer qubits",
    ):
        assert part in msg, msg
    # the same solve without the saved states fits
    res = network_mesolve(net, _rho0(6), [0.0, 0.5, 1.0], save_states=False)
    assert res.states is None and res.reduced.shape == (3, 6, 2, 2)
    # an explicit limit overrides the available memory
    with pytest.raises(InsufficientMemoryError, match=r"\(`max_memory`\)"):
        network_mesolve(net, _rho0(6), [0.0, 1.0], save_states=False, max_memory=1)


def test_callers_rho0_survives_the_donated_solve():
    # the solve donates its own checked copy of rho0, never the caller's array
    n, tsave = 6, [0.0, 0.5, 1.0]  # the solve compiled in the test above
    rho0 = jnp.asarray(network_solve.product_state(_rho0(n)))
    ref = np.asarray(rho0)
    res = network_mesolve(_ring(n), rho0, tsave, save_states=False)
    np.testing.assert_array_equal(np.asarray(rho0), ref)
    again = network_mesolve(_ring(n), rho0, tsave, save_states=False)
    np.testing.assert_array_equal(
        np.asarray(res.final_state), np.asarray(again.final_state)
    )
