"""`qflow blended` (`run_blended`) from configs, its config schema, and the
Dicke-type operators it builds."""

import math

import numpy as np
import pytest
import qutip

from qflow_jax.apps.blended import run_blended, validate_blended_config
from qflow_jax.config import ConfigError, load_yaml
from qflow_jax.network import QubitNetwork, dicke_operators


def test_shipped_configs_validate():
    for name in ("path3", "ring8", "dicke", "orbit8"):
        cfg = validate_blended_config(load_yaml(f"configs/network_{name}.yaml"))
        assert cfg["network"]["n"] in (3, 8)


@pytest.mark.e2e
def test_run_blended_reports_disconnected_graph(tmp_path):
    cfg = load_yaml("configs/network_path3.yaml")
    cfg["network"] |= {"n": 4, "graph": "custom", "edges": [[0, 1, 1.0], [2, 3, 1.0]]}
    cfg["network"]["fields"] = [[0.3, 0, 0.5]] * 2 + [[0, 0.4, 1.0]] * 2
    cfg["network"]["initial"] = ["0", "1", "0", "1"]
    cfg["times"] = {"t_end": 4.0, "n_save": 41}
    cfg["sweep"] = {"ks": [30.0, 100.0]}
    summary = run_blended(cfg, tmp_path)
    assert summary["components"] == [[0, 1], [2, 3]]
    assert any("disconnected" in note for note in summary["notes"])


@pytest.mark.parametrize(
    ("patch", "match"),
    [
        ({"k": -1.0}, "network.k"),
        ({"graph": "lattice"}, "network.graph"),
        ({"edges": [[0, 5, 1.0]], "graph": "custom"}, "outside"),
        ({"initial": ["0", "x", "0"]}, r"initial\[1\]"),
        ({"decay": [0.1, -0.1, 0.1]}, "network.decay"),
    ],
)
def test_bad_config_raises_config_error(tmp_path, patch, match):
    cfg = load_yaml("configs/network_path3.yaml")
    cfg["network"] |= patch
    with pytest.raises(ConfigError, match=match):
        run_blended(cfg, tmp_path)


@pytest.mark.parametrize("ks", [[30.0], [0.0, 30.0], [10.0, -5.0], "100"])
@pytest.mark.parametrize("config", ["network_path3.yaml", "network_dicke.yaml"])
def test_bad_sweep_gains_name_the_field(tmp_path, config, ks):
    cfg = load_yaml(f"configs/{config}")
    cfg["sweep"] = {**cfg.get("sweep", {}), "ks": ks}
    with pytest.raises(ConfigError, match=r"sweep\.ks"):
        run_blended(cfg, tmp_path)


def test_dicke_operators_match_qutip_construction():
    n, N, omega, g, kappa, k = 2, 4, 1.1, 0.4, 0.3, 2.0
    net = QubitNetwork(2, "path", k=k, H=[0.5 * np.diag([1, -1])] * 2)
    H, jumps = dicke_operators(net, N, omega, g, kappa)
    a = qutip.tensor(qutip.destroy(N), qutip.qeye(2), qutip.qeye(2))
    sx = [
        qutip.tensor(
            qutip.qeye(N),
            *[qutip.sigmax() if i == j else qutip.qeye(2) for i in range(n)],
        )
        for j in range(n)
    ]
    sz = [
        qutip.tensor(
            qutip.qeye(N),
            *[qutip.sigmaz() if i == j else qutip.qeye(2) for i in range(n)],
        )
        for j in range(n)
    ]
    ref = (
        omega * a.dag() * a
        + 0.5 * (sz[0] + sz[1])
        + g / math.sqrt(n) * (a + a.dag()) * (sx[0] + sx[1])
    )
    np.testing.assert_allclose(H, ref.full(), atol=1e-12)
    swap = qutip.tensor(
        qutip.qeye(N), qutip.Qobj(np.eye(4)[[0, 2, 1, 3]], dims=[[2, 2], [2, 2]])
    )
    np.testing.assert_allclose(jumps[0], math.sqrt(k) * swap.full(), atol=1e-12)
    np.testing.assert_allclose(jumps[1], math.sqrt(kappa) * a.full(), atol=1e-12)
