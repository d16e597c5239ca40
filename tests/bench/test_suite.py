"""`qflow bench`: the comparison suite runs, measures every method the same way,
records what cannot run as out of reach, and rejects bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from qflow_jax.apps.bench.suite import add_comparisons, load_suite, problem_config
from qflow_jax.apps.run import setup_qflow
from qflow_jax.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _elsewhere(monkeypatch, tmp_path_factory):
    """The shipped suites (package data) and the engines suite's benchmark scripts
    are found from any folder, not only from the repository root."""
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))


def _rows(folder: Path) -> dict:
    data = json.loads((folder / "results.json").read_text())
    return {(r["dim"], r["method"]): r for r in data["rows"]}


# whole-suite run (15-70 s): deselected by default, `python -m pytest -m slow`
@pytest.mark.slow
def test_quick_dims_suite_runs_every_method_against_the_exact_solution(tmp_path):
    assert (
        main(["bench", "dims", "--quick", "--sizes", "2", "--out", str(tmp_path)]) == 0
    )
    rows = _rows(tmp_path)
    assert {m for _, m in rows} == {
        "exact",
        "tdvp",
        "euler_kl",
        "fd",
        "spectral",
        "pinn",
    }
    assert all(r["status"] == "ok" for r in rows.values()), rows
    m = {name: r["metrics"] for (_, name), r in rows.items()}
    # TDVP holds the Gaussian family exactly: only the sampling error of <n>
    # (50k samples: ~0.5%) and none in the density
    assert m["tdvp"]["max_rel_error_n"] < 0.03
    assert m["tdvp"]["final_kl_exact"] < 1e-3
    # the spectral solver is exact up to the time stepper at this resolution;
    # second-order differences at h = 0.4 are off by ~ (h / sigma)^2 / 12 * n
    assert m["spectral"]["max_rel_error_n"] < 5e-3
    assert m["fd"]["max_rel_error_n"] < 0.1
    assert m["fd"]["max_rel_error_n"] > m["spectral"]["max_rel_error_n"]
    # few steps in the quick mode: Euler-KL measured 0.018; the PINN (300 steps)
    # 0.29 and a relative L2 of Q of 0.20, where a PINN that stays at Q0 is off by
    # e^(gamma t_end) - 1 = 0.65 in <n> at t_end
    assert m["euler_kl"]["max_rel_error_n"] < 0.05
    assert m["pinn"]["max_rel_error_n"] < 0.35
    assert m["pinn"]["final_l2_rel_q"] < 0.3
    for name in ("tdvp", "euler_kl", "fd", "spectral", "pinn"):
        r = rows[(2, name)]
        assert r["method_s"] > 0 and r["peak_rss_MiB"] > 0
        assert np.asarray(r["n"]).shape == (3, 1)
        assert 0 <= m[name]["final_l2_rel_q"] < 1
    md = (tmp_path / "results.md").read_text()
    assert md.count("| 2 |") == 6 and "Budgets per method and size: 120 s" in md
    for png in ("error_vs_dim", "kl_vs_dim", "time_vs_dim", "memory_vs_dim"):
        assert (tmp_path / f"{png}.png").read_bytes()[:8] == PNG


def _suite(tmp_path: Path, methods: dict, budgets: dict) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "title": "tiny",
                "sizes": [2, 4],
                "problem": {
                    "model": {"kind": "damped_modes", "gamma": 1.0, "hopping": 0.5},
                    "initial": {"alpha": [1.0, 0.0]},
                    "times": {"t_end": 0.2, "n_save": 2},
                    "eval_samples": 10000,
                },
                "budgets": budgets,
                "methods": methods,
            }
        )
    )
    return path


# suite runs against budgets (about 10 s): `python -m pytest -m slow`
@pytest.mark.slow
def test_over_budget_methods_are_recorded_as_out_of_reach(tmp_path):
    # 22 points per axis: 0.08 MiB at d = 2, 37 MiB at d = 4
    suite = _suite(
        tmp_path, {"fd": {"kind": "fd", "spacing": 0.5}}, {"memory_gib": 1 / 1024}
    )
    out = tmp_path / "memory"
    assert main(["bench", str(suite), "--out", str(out)]) == 0
    rows = _rows(out)
    assert rows[(2, "fd")]["status"] == "ok"
    assert rows[(4, "fd")]["status"] == "out of reach"
    assert "estimated memory 0.0" in rows[(4, "fd")]["reason"]
    assert "> budget 0.000977 GiB" in rows[(4, "fd")]["reason"]
    assert "Not ok:" in (out / "results.md").read_text()
    # JAX alone takes more than 3 s to start: TDVP is stopped at d = 2, and not
    # started at d = 4
    suite = _suite(
        tmp_path,
        {"tdvp": {"kind": "tdvp", "settings": {"batch_size": 64, "dt": 0.1}}},
        {"time_s": 0.5, "overhead_s": 3.0},
    )
    out = tmp_path / "time"
    assert main(["bench", str(suite), "--out", str(out)]) == 0
    rows = _rows(out)
    assert rows[(2, "tdvp")]["status"] == "out of reach"
    assert "over the time budget: stopped after" in rows[(2, "tdvp")]["reason"]
    assert rows[(4, "tdvp")]["reason"].startswith(
        "estimated: already over the time budget of 0.5 s at dimension 2"
    )
    # --resume keeps the finished rows and runs nothing again
    before = json.loads((out / "results.json").read_text())["rows"]
    assert main(["bench", str(suite), "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "results.json").read_text())["rows"] == before


# whole-suite run (15-70 s): deselected by default, `python -m pytest -m slow`
@pytest.mark.slow
def test_quick_bosonic_grids_follow_the_fock_reference(tmp_path):
    args = ["bench", "bosonic", "--quick", "--methods", "exact", "fd", "spectral"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    rows = _rows(tmp_path)
    assert rows[(2, "exact")]["details"]["reference"].startswith("mesolve")
    # the stabilised grids change the PDE where |alpha| > 3.2 (bosonic.yaml): ~1%
    for name, tol in (("spectral", 0.03), ("fd", 0.1)):
        r = rows[(2, name)]
        assert r["status"] == "ok"
        assert r["metrics"]["max_rel_error_n"] < tol
        assert r["metrics"]["final_kl_exact"] is None  # no exact density here


# whole-suite run (15-70 s): deselected by default, `python -m pytest -m slow`
@pytest.mark.slow
def test_quick_engines_suite_gathers_the_peer_rows(tmp_path):
    assert main(["bench", "engines", "--quick", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    cases = {r["suite_case"] for r in rows}
    assert {"kerr N=20", "ring n=4", "ring n=6"} <= cases
    for r in rows:
        if r["engine"] == "qflow_jax":
            assert r["status"] == "ok" and r["time_s"] > 0
        else:  # the peers come with the optional extra ".[bench]"
            assert r["status"] in ("ok", "not installed"), r
            if r["status"] == "ok":
                assert r["max_abs_diff_vs_qutip"] < 1e-4
    assert "| ring n=6 | qflow_jax |" in (tmp_path / "results.md").read_text()


def test_bose_hubbard_family_expands_to_the_expression_model():
    cfg = load_suite("bosonic")
    q = problem_config(cfg, 4)
    assert q["model"]["hamiltonian"] == (
        "U/2 * adag(0)**2 @ a(0)**2 + U/2 * adag(1)**2 @ a(1)**2 + "
        "J * (adag(0) @ a(1) + adag(1) @ a(0))"
    )
    assert q["model"]["jump_ops"] == ["sqrt(gamma) * a(0)", "sqrt(gamma) * a(1)"]
    assert q["reference"] == {"cutoff": 12}
    setup = setup_qflow({**q, "times": {"t_end": 0.1, "n_save": 2}})
    # loss alone would give exp(-0.1); hopping and Kerr keep the total
    np.testing.assert_allclose(
        setup.problem.n_ref[-1].sum(), 2 * np.exp(-0.1), rtol=1e-6
    )


def test_curves_figure_has_a_column_per_size_and_skips_what_is_missing(tmp_path):
    from qflow_jax.plots import plot_suite_curves
    from qflow_jax.runs import RunFolder

    t = [0.0, 1.0, 2.0]

    def row(dim, method, **curves):
        return {"dim": dim, "method": method, "curves": {"t": t, **curves}}

    results = {
        "suite": "synthetic",
        "rows": [
            row(2, "exact", centroid=[1.0, 0.6, 0.4]),
            row(
                2,
                "tdvp",
                centroid=[1.0, 0.6, 0.4],
                pde_residual=[0.0, 1e-8, 1e-7],
                l1_q=[1e-3, 2e-3, 3e-3],
                l1_q_noise_floor=[0.0] * 3,
            ),
            row(
                2,
                "fd",
                centroid=[1.0, 0.61, 0.41],
                pde_residual=[None] * 3,
                l1_q=[1e-2] * 3,
                l1_q_noise_floor=[0.0] * 3,
            ),
            {"dim": 40, "method": "fd", "status": "out of reach"},
            row(40, "exact", centroid=[3.0, 2.0, 1.0]),
            row(
                40,
                "tdvp",
                centroid=[3.0, 2.0, 1.01],
                pde_residual=[1e-3] * 3,
                l1_q=[0.05] * 3,
                l1_q_noise_floor=[0.02] * 3,
            ),
        ],
    }
    run = RunFolder(tmp_path)
    path = plot_suite_curves(run, results)
    assert path.name == "curves.png" and path.read_bytes()[:8] == PNG
    assert plot_suite_curves(run, {"suite": "s", "rows": [results["rows"][3]]}) is None


def test_refinement_comparison_is_the_largest_difference_of_n():
    cfg = {"methods": {"a": {"kind": "tdvp", "compare_to": "b"}, "b": {"kind": "tdvp"}}}
    rows = [
        {"dim": 2, "method": "a", "n": [[1.0], [0.5]], "metrics": {}},
        {"dim": 2, "method": "b", "n": [[1.0], [0.45]], "metrics": {}},
    ]
    add_comparisons(rows, cfg)
    assert rows[0]["metrics"]["max_abs_diff_n_vs_b"] == pytest.approx(0.05)
    assert "max_abs_diff_n_vs_a" not in rows[1]["metrics"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["nope"], "no suite 'nope'"),
        (["dims", "--sizes", "3"], "`--sizes` [3] not in the suite's sizes"),
        (["dims", "--methods", "magic"], "`--methods` ['magic'] not in the suite"),
    ],
)
def test_bad_input_exits_2_with_a_message(args, message, capsys):
    assert main(["bench", *args]) == 2
    assert message in capsys.readouterr().err


def test_bad_method_settings_are_refused_before_running(tmp_path, capsys):
    suite = _suite(
        tmp_path,
        {
            "fd": {"kind": "fd", "spacin": 0.5},
        },
        {},
    )
    assert main(["bench", str(suite)]) == 2
    err = capsys.readouterr().err
    assert "unknown key `methods.fd.spacin`; allowed keys here: atol," in err
    suite = _suite(tmp_path, {"t": {"kind": "tdvp", "settings": {"dt": -1}}}, {})
    assert main(["bench", str(suite)]) == 2
    assert "`methods.t.settings.dt` must be > 0.0, got -1" in capsys.readouterr().err
    suite = _suite(tmp_path, {"p": {"kind": "pinn", "step": 3}}, {})
    assert main(["bench", str(suite)]) == 2
    assert "`methods.p`: unknown key `step`" in capsys.readouterr().err


# whole-suite run (about 60 s): `python -m pytest -m slow`
@pytest.mark.slow
def test_quick_paper_suite_draws_every_method_against_time(tmp_path):
    args = ["bench", "paper", "--quick", "--sizes", "2", "--out", str(tmp_path)]
    assert main(args) == 0
    rows = _rows(tmp_path)
    assert all(r["status"] == "ok" for r in rows.values()), rows
    exact = rows[(2, "exact")]["curves"]
    for name in ("tdvp", "euler_kl", "fd", "spectral", "pinn"):
        c = rows[(2, name)]["curves"]
        assert c["t"] == exact["t"] and len(c["l1_q"]) == 7
        np.testing.assert_allclose(c["centroid_ref"], exact["centroid"])
        err = rows[(2, name)]["metrics"]["max_centroid_error"]
        assert err == max(c["centroid_error"])
    m = {name: r.get("metrics") for (_, name), r in rows.items()}
    # the Gaussian family and the spectral grid hold the exact centroid (sampling
    # error of 50k samples ~ 0.003, the grid's time stepper)
    assert m["tdvp"]["max_centroid_error"] < 0.02
    assert m["spectral"]["max_centroid_error"] < 0.02
    res = rows[(2, "tdvp")]["curves"]["pde_residual"]
    assert max(res) < 1e-4  # out of sample; the grids have none
    assert rows[(2, "fd")]["curves"]["pde_residual"] == [None] * 7
    assert 0 < rows[(2, "pinn")]["curves"]["pde_residual"][-1] < 2
    assert (tmp_path / "curves.png").read_bytes()[:8] == PNG
    assert "max centroid err" in (tmp_path / "results.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("suite", ["dims", "bosonic", "engines", "paper"])
def test_every_quick_suite_runs_to_the_end(suite, tmp_path):
    """The whole `--quick` mode (README: under 10 minutes on 2 cores for all three):
    every row is measured or recorded as out of reach, none fails."""
    assert main(["bench", suite, "--quick", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert rows and all(
        r["status"] in ("ok", "out of reach", "not installed") for r in rows
    )
