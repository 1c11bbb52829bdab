"""Kill -9 and resume: real `cortexreplay run` processes killed at random points, then resumed.

CI runs one seeded chain of kills (the run, the encoder service, both) on the tiny recording;
``CORTEXREPLAY_KILLS=N`` runs N chains (the full-size check of the README).
"""
import copy
import os
import re
import signal
import subprocess
import time

import numpy as np
import pytest

from simulator.cli import main
from simulator.results import read_runs
from simulator.run_checkpoint import CheckpointError, RunCheckpoint

from test_end_to_end import _command

pytestmark = pytest.mark.timeout(600)

SCENARIO = """\
description = "kill and resume"
mode = "continuous"
order = "recorded"
seeds = [0]

[learning]
lr = 3e-3
retention = 0.9

[encoder]
lags = [0, 1, 2]
warmup = 2
dtype = "float64"

[variants.shuffled]
order = "shuffled"
"""
KILLS = int(os.environ.get("CORTEXREPLAY_KILLS", "1"))


def _argv(tmp, recording, checkpoint, results):
    scenario = tmp / "resume.toml"
    scenario.write_text(SCENARIO)
    return ["run", str(scenario), "--store", str(recording), "--results",
            str(results), "--set", f"model.checkpoint={checkpoint}", "--jobs", "1",
            "--no-progress", "--checkpoint-every", "2"]


def _comparable(results):
    """Every array of every run, timings left out (they are the only thing that may differ)."""
    out = {}
    for run in read_runs(results):
        for section in ("trials", "scores"):
            for name, value in run[section].items():
                if not name.startswith("time_"):
                    out[f"{run['run_id']}/{section}/{name}"] = value
        out[f"{run['run_id']}/dropped_frames"] = run["dropped_frames"]
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_recording, tiny_checkpoint):
    tmp = tmp_path_factory.mktemp("reference")
    assert main(_argv(tmp, tiny_recording, tiny_checkpoint, tmp / "res.zarr")) == 0
    return _comparable(tmp / "res.zarr")


def _checkpointed_at(results):
    """The trial the run's checkpoint resumes at (its header), or -1 before the first one."""
    found = [RunCheckpoint.trial_of(p) for p in (results / "checkpoints").glob("*.safetensors")]
    return max([t for t in found if t is not None], default=-1)


def _kill_after_a_new_checkpoint(argv, results, target, rng):
    """Start the run, wait until it writes a checkpoint past the one it started from, then
    kill -9 ``target`` after a random delay; return whether the run was still running."""
    before = _checkpointed_at(results)
    proc = subprocess.Popen([*_command(), *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    said = ""
    while not (found := re.search(r"encoder service pid (\d+)", said)):
        line = proc.stdout.readline()
        assert line, said
        said += line
    service = int(found.group(1))
    deadline = time.monotonic() + 240
    while _checkpointed_at(results) <= before:
        assert proc.poll() is None and time.monotonic() < deadline, said + proc.stdout.read()
        time.sleep(0.02)
    time.sleep(rng.uniform(0.0, 0.4))  # anywhere: mid-trial, mid-snapshot, mid-write
    alive = proc.poll() is None
    if target in ("service", "both"):
        os.kill(service, signal.SIGKILL)
    if target in ("run", "both"):
        os.killpg(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=120)
    if target == "service" and alive:
        # The run sees its service die, stops its runs and says how to go on, in one line.
        assert proc.returncode == 2 and "rerun with --resume" in out, out[-2000:]
    return alive


def test_killed_three_ways_then_resumed_equals_an_uninterrupted_run(tmp_path, tiny_recording,
                                                                    tiny_checkpoint, reference,
                                                                    capsys):
    """The run is killed (-9) three times in a row, each time at a random point after a new
    checkpoint: the run's processes, the encoder service, then both; then resumed to the end."""
    rng = np.random.default_rng(KILLS)
    for k in range(KILLS):
        results = tmp_path / f"res-{k}.zarr"
        argv = _argv(tmp_path, tiny_recording, tiny_checkpoint, results)
        for i, target in enumerate(("run", "service", "both")):
            assert _kill_after_a_new_checkpoint(argv if i == 0 else [*argv, "--resume"], results,
                                                target, rng), f"{target}: killed after it ended"
            if i == 0:
                # Without --resume an interrupted run is refused, not silently started over.
                capsys.readouterr()
                assert main(argv) == 2 and "pass --resume" in capsys.readouterr().err
        # The last resume runs in this process (its workers and service are processes still).
        assert main([*argv, "--resume"]) == 0
        got = _comparable(results)
        assert sorted(got) == sorted(reference)
        for key, value in reference.items():  # float64 on CPU: identical, trial by trial
            np.testing.assert_array_equal(got[key], value, err_msg=key)
        assert not list((results / "checkpoints").glob("*.safetensors"))  # cleaned up


# -- the checkpoint file ------------------------------------------------------------------


def test_a_crash_mid_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    ckpt = RunCheckpoint(tmp_path, "v/s/seed-0")
    ckpt.save(4, {"rows": {"loss": np.arange(4.0)}}, config={"a": 1})

    def crash(*args):
        raise KeyboardInterrupt  # the process dies between writing and renaming

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save(6, {"rows": {"loss": np.arange(6.0)}}, config={"a": 1})
    monkeypatch.undo()
    trial, state = ckpt.load(config={"a": 1})
    assert trial == 4 and state["rows"]["loss"].tolist() == [0, 1, 2, 3]
    assert [p.name for p in tmp_path.joinpath("checkpoints").iterdir()
            if "tmp" in p.name] == []


def test_a_checkpoint_made_before_a_key_existed_resumes_with_its_default(tmp_path):
    from simulator.scenario import DEFAULTS

    cfg = copy.deepcopy(DEFAULTS)
    older = {k: v for k, v in copy.deepcopy(DEFAULTS).items() if k != "probe"}
    del older["encoder"]["hrf"]
    ckpt = RunCheckpoint(tmp_path, "v/s/seed-0")
    ckpt.save(2, {"x": np.ones(3)}, config=older)
    assert ckpt.load(config=cfg)[0] == 2
    cfg["encoder"]["hrf"] = "glover"  # a setting other than the default is another run
    with pytest.raises(CheckpointError, match="made with other settings"):
        ckpt.load(config=cfg)


def test_a_torn_or_foreign_checkpoint_gets_one_line(tmp_path):
    ckpt = RunCheckpoint(tmp_path, "v/s/seed-0")
    ckpt.save(2, {"x": np.ones(3)}, config={"a": 1})
    with pytest.raises(CheckpointError, match="made with other settings"):
        ckpt.load(config={"a": 2})
    data = ckpt.path.read_bytes()
    ckpt.path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"unreadable checkpoint of run v/s/seed-0 .*--force"):
        ckpt.load(config={"a": 1})


def test_a_run_still_alive_holds_its_lock(tmp_path):
    first, second = RunCheckpoint(tmp_path, "v/s/seed-0"), RunCheckpoint(tmp_path, "v/s/seed-0")
    first.acquire()
    try:
        with pytest.raises(CheckpointError, match="still running in another process"):
            second.acquire()
    finally:
        first.release()
    second.acquire()
    second.release()
