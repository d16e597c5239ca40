"""Checkpoints (orbax): round trips, steps kept, and one clear ResumeError for every
damaged or foreign checkpoint."""

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.core import FrozenDict

from qflow_jax.checkpoints import Checkpoints
from qflow_jax.runs import ResumeError, fingerprint

FP = fingerprint({"seed": 0, "flow": {"layers": 2}})
AGAIN = "run without --resume to start again"


def params(layers: int = 2, width: int = 8) -> dict:
    rng = np.random.default_rng(layers)
    return {
        "params": {
            f"layer_{i}": {
                "kernel": jnp.asarray(rng.normal(size=(width, width)), jnp.float32),
                "bias": jnp.asarray(rng.normal(size=width)),
            }
            for i in range(layers)
        }
    }


def state(layers: int = 2) -> dict:
    rng = np.random.default_rng(0)
    return {
        "flow": params(layers),
        "q_flow": rng.normal(size=(3, 11, 11)),
        "phase": rng.normal(size=4) + 1j * rng.normal(size=4),
        "count": np.int32(7),
        "lr": 0.5,
        "pair": (np.arange(3), FrozenDict({"a": jnp.arange(2.0)})),
    }


def meta(**extra) -> dict:
    return {"fingerprint": FP, "records": [{"t": 0.0, "err": 1e-3}], **extra}


def same(a, b) -> bool:
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(leaves_a) == len(leaves_b) and all(
        np.asarray(x).dtype == np.asarray(y).dtype
        and np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(leaves_a, leaves_b, strict=True)
    )


@pytest.fixture
def saved(tmp_path) -> Checkpoints:
    ckpts = Checkpoints(tmp_path / "run" / "checkpoints")
    ckpts.save(3, state(), meta())
    return ckpts


def step_files(ckpts: Checkpoints, step: int) -> list:
    root = ckpts.folder / str(step)
    return sorted(p for p in root.rglob("*") if p.is_file())


def resume_error(ckpts: Checkpoints, template=None, fp=FP, step=None) -> str:
    with pytest.raises(ResumeError) as err:
        ckpts.restore(state() if template is None else template, fp, step)
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text
    return text


# ------------------------------------------------------------------ round trips


def test_round_trip_is_bit_identical(saved):
    tree = state()
    step, restored, stored = saved.restore(tree, FP)
    assert step == 3
    assert jax.tree.structure(restored) == jax.tree.structure(tree)
    assert same(restored, tree)
    assert stored == meta()
    assert isinstance(restored["flow"]["params"]["layer_0"]["kernel"], jax.Array)
    assert isinstance(restored["q_flow"], np.ndarray)
    assert type(restored["lr"]) is float and type(restored["count"]) is np.int32
    assert isinstance(restored["pair"][1], FrozenDict)


def test_restore_into_abstract_template(saved):
    tree = state()
    abstract = {**tree, "flow": jax.eval_shape(lambda: params())}
    _, restored, _ = saved.restore(abstract, FP)
    assert same(restored, tree)
    assert isinstance(restored["flow"]["params"]["layer_1"]["bias"], jax.Array)


def test_steps_kept_and_latest(tmp_path):
    ckpts = Checkpoints(tmp_path / "ck", keep=2)
    assert ckpts.latest_step() is None and ckpts.all_steps() == []
    assert not ckpts.folder.exists()  # reading creates nothing
    for step in range(5):
        ckpts.save(step, state(), meta(step=step))
    assert ckpts.latest_step() == 4
    assert ckpts.all_steps() == [3, 4]
    assert sorted(p.name for p in ckpts.folder.iterdir()) == ["3", "4"]
    step, _, stored = ckpts.restore(state(), FP, step=3)
    assert (step, stored["step"]) == (3, 3)
    assert "no step 1 (complete steps: 3, 4)" in resume_error(ckpts, step=1)


def test_save_replaces_later_steps_of_an_earlier_run(tmp_path):
    ckpts = Checkpoints(tmp_path / "ck", keep=3)
    for step in (5, 6):
        ckpts.save(step, state(), meta())
    ckpts.save(0, state(), meta(fresh=True))
    assert ckpts.all_steps() == [0]
    assert ckpts.restore(state(), FP)[2]["fresh"] is True


def test_save_checks_its_input(tmp_path):
    ckpts = Checkpoints(tmp_path / "ck")
    with pytest.raises(ValueError, match="fingerprint"):
        ckpts.save(0, state(), {"records": []})
    with pytest.raises(ValueError, match="JSON-able"):
        ckpts.save(0, state(), meta(bad=object()))
    with pytest.raises(ValueError, match="key_data"):
        ckpts.save(0, {"key": jax.random.key(0)}, meta())
    with pytest.raises(ValueError, match="keep"):
        Checkpoints(tmp_path / "ck", keep=0)
    assert ckpts.latest_step() is None


def test_prints_and_logs_nothing(tmp_path, capfd, caplog):
    caplog.set_level(logging.DEBUG)
    ckpts = Checkpoints(tmp_path / "ck")
    ckpts.save(0, state(), meta())
    ckpts.latest_step()
    ckpts.restore(state(), FP)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert not [r for r in caplog.records if "orbax" in r.pathname]


# ------------------------------------------------------------------ error cases


def test_a_deleted_or_truncated_files(saved, tmp_path):
    files = step_files(saved, 3)
    cases = {
        "array metadata deleted": lambda d: (d / "3/tree/_METADATA").unlink(),
        "array metadata truncated": lambda d: os.truncate(d / "3/tree/_METADATA", 50),
        "manifest deleted": lambda d: (d / "3/tree/manifest.ocdbt").unlink(),
        "largest data file truncated": lambda d: os.truncate(
            d / max(files, key=lambda p: p.stat().st_size).relative_to(saved.folder),
            100,
        ),
        "meta deleted": lambda d: (d / "3/meta/metadata").unlink(),
    }
    for i, (what, damage) in enumerate(cases.items()):
        copy = tmp_path / f"copy{i}"
        shutil.copytree(saved.folder, copy)
        damage(copy)
        text = resume_error(Checkpoints(copy))
        assert text.startswith(f"{copy} (step 3) is damaged ("), what
        assert text.endswith(AGAIN), what


def test_a_flipped_bytes_caught_by_checksum(saved):
    data = max(step_files(saved, 3), key=lambda p: p.stat().st_size)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    assert "is damaged" in resume_error(saved)


def test_b_garbled_meta(saved):
    path = saved.folder / "3" / "meta" / "metadata"
    path.write_text(path.read_text()[:-7])
    text = resume_error(saved)
    assert "(step 3) is damaged (JSONDecodeError" in text
    path.write_text("[1, 2]")
    assert "meta is a list" in resume_error(saved)


def test_c_other_structure_or_shapes(saved):
    text = resume_error(saved, {**state(), "flow": params(layers=3)})
    assert "(step 3) holds other arrays than this run" in text
    assert "flow.params.layer_2.kernel is absent there, float32[8, 8] now" in text
    text = resume_error(saved, {**state(), "q_flow": np.zeros((4, 11, 11))})
    assert "q_flow is float64[3, 11, 11] there, float64[4, 11, 11] now" in text
    text = resume_error(saved, {**state(), "q_flow": np.zeros((3, 11, 11), "f4")})
    assert "q_flow is float64[3, 11, 11] there, float32[3, 11, 11] now" in text


def test_d_other_fingerprint(saved):
    other = fingerprint({"seed": 1, "flow": {"layers": 2}})
    text = resume_error(saved, fp=other)
    assert text.startswith(f"{saved.folder} (step 3) was written by a different run")
    assert "config.seed is 0 there, 1 now" in text


def test_d_fingerprint_checked_before_arrays(saved):
    # another layer count changes the fingerprint: that is what is reported
    other = fingerprint({"seed": 0, "flow": {"layers": 3}})
    text = resume_error(saved, template={**state(), "flow": params(3)}, fp=other)
    assert "config.flow.layers is 2 there, 3 now" in text


def test_e_meta_without_fingerprint(saved):
    path = saved.folder / "3" / "meta" / "metadata"
    stored = json.loads(path.read_text())
    del stored["fingerprint"]
    path.write_text(json.dumps(stored))
    assert "carries no run fingerprint" in resume_error(saved)


def test_f_leftover_of_a_killed_save_is_ignored(saved):
    partial = saved.folder / "4.orbax-checkpoint-tmp"
    shutil.copytree(saved.folder / "3", partial)
    (partial / "tree" / "manifest.ocdbt").unlink()
    (partial / "commit_success.txt").unlink()
    assert saved.latest_step() == 3
    step, restored, _ = saved.restore(state(), FP)  # step None: latest complete
    assert step == 3 and same(restored, state())
    saved.save(4, state(), meta(step=4))
    assert saved.all_steps() == [3, 4] and not partial.exists()
    assert saved.restore(state(), FP)[2]["step"] == 4


def test_g_not_a_checkpoints_folder(tmp_path):
    path = tmp_path / "checkpoints"
    path.write_text("not a folder")
    ckpts = Checkpoints(path)
    for call in (ckpts.latest_step, lambda: ckpts.restore(state(), FP)):
        with pytest.raises(ResumeError, match="is not a checkpoints folder"):
            call()
    with pytest.raises(ValueError, match="cannot write checkpoints"):
        ckpts.save(0, state(), meta())
    empty = Checkpoints(tmp_path / "empty")
    empty.folder.mkdir()
    assert "holds no complete checkpoint" in resume_error(empty)


def test_kill_9_after_save_keeps_the_step(tmp_path):
    folder = tmp_path / "ck"
    script = textwrap.dedent(
        f"""
        import numpy as np
        from qflow_jax.checkpoints import Checkpoints
        ckpts = Checkpoints({str(folder)!r}, keep=2)
        tree = {{"q": np.zeros((50, 101, 101))}}
        for step in range(1000):
            tree["q"][:] = step
            ckpts.save(step, tree, {{"fingerprint": {{}}, "step": step}})
            print(step, flush=True)
        """
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env
    ) as proc:
        for line in proc.stdout:
            if int(line) == 2:
                proc.kill()  # SIGKILL, mid-way through saving step 3 or so
                break
    ckpts = Checkpoints(folder)
    last = ckpts.latest_step()
    assert last is not None and last >= 2
    step, tree, stored = ckpts.restore({"q": np.zeros((50, 101, 101))}, {}, None)
    assert step == last == stored["step"] and np.all(tree["q"] == last)


def test_a_damaged_restore_prints_one_line_only(saved):
    # orbax leaves tensorstore reads in flight when a restore fails; their late
    # reports ("Event loop is closed", "exception was never retrieved") are dropped
    (saved.folder / "3" / "tree" / "manifest.ocdbt").unlink()
    script = textwrap.dedent(
        f"""
        import numpy as np
        from qflow_jax.checkpoints import Checkpoints
        from qflow_jax.runs import ResumeError
        template = {{f"a{{i}}": np.zeros(1) for i in range(12)}}
        for _ in range(20):
            try:
                Checkpoints({str(saved.folder)!r}).restore(template, {FP!r})
            except ResumeError as err:
                text = str(err)
        print(text)
        """
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.startswith(f"{saved.folder} (step 3) is damaged (")
    assert done.stdout.count("\n") == 1


def test_steps_listed_while_another_process_saves(tmp_path):
    # a monitor of a live run lists steps that the run deletes (keep=2) meanwhile
    folder = tmp_path / "ck"
    script = textwrap.dedent(
        f"""
        import numpy as np
        from qflow_jax.checkpoints import Checkpoints
        ckpts = Checkpoints({str(folder)!r}, keep=2)
        for step in range(1, 61):
            ckpts.save(step, {{"q": np.full(8, step)}}, {{"fingerprint": {{}}}})
        """
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    ckpts, seen = Checkpoints(folder), set()
    with subprocess.Popen([sys.executable, "-c", script], env=env) as proc:
        while proc.poll() is None:
            steps = ckpts.all_steps()
            assert len(steps) <= 3 and steps == sorted(steps)
            seen.update(steps)
    assert proc.returncode == 0 and ckpts.all_steps() == [59, 60]
    assert len(seen) > 10  # the listing ran alongside the saves
