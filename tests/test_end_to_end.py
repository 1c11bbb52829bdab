"""The whole pipeline through the CLI: a scenario run over a real recording, checkpoint and encoder process."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from simulator.cli import main
from simulator.results import read_runs

pytestmark = pytest.mark.timeout(300)

SCENARIO = """\
description = "end-to-end test"
mode = "continuous"
order = "recorded"
seeds = [0]
compare = [["continuous", "frozen"], ["continuous", "continuous-shuffled"]]

[learning]
lr = 3e-3
steps_per_sound = 1
retention = 0.9

[encoder]
lags = [0, 1, 2]
warmup = 2

[variants.frozen]
mode = "frozen"

[variants.continuous]

[variants.continuous-shuffled]
order = "shuffled"
"""
N_EVENTS, N_VOXELS, WARMUP = 12, 24, 2


def _command():
    script = Path(sys.executable).with_name("cortexreplay")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from simulator.cli import main; sys.exit(main())"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_recording, tiny_checkpoint):
    """One `cortexreplay run` of the scenario, as a separate process (it starts the encoder process)."""
    tmp = tmp_path_factory.mktemp("e2e")
    scenario = tmp / "e2e.toml"
    scenario.write_text(SCENARIO)
    argv = ["run", str(scenario), "--store", str(tiny_recording), "--results", str(tmp / "res.zarr"),
            "--set", f"model.checkpoint={tiny_checkpoint}", "--jobs", "2", "--no-progress"]
    proc = subprocess.run([*_command(), *argv], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return argv, tmp / "res.zarr", proc


def test_run_writes_every_run(finished):
    _, results, proc = finished
    assert f"run: 3 run(s) written to {results}" in proc.stdout
    assert "Traceback" not in proc.stderr
    runs = {r["variant"]: r for r in read_runs(results)}
    assert sorted(runs) == ["continuous", "continuous-shuffled", "frozen"]
    for name, run in runs.items():
        assert run["run_id"] == f"{name}/sub-01/seed-0" and run["complete"]
        n_layers = len(run["layers"])
        assert n_layers >= 2 and run["layers"][0] == "cnn"
        trials, scores = run["trials"], run["scores"]
        for field, value in trials.items():
            assert value.shape[0] == N_EVENTS, field
        assert trials["delta_w"].shape == trials["trial_r"].shape == (N_EVENTS, n_layers)
        assert scores["r"].shape == scores["r2"].shape == (n_layers, N_VOXELS)
        assert scores["event_stats"].shape == (n_layers, N_EVENTS, 6, N_VOXELS)
        # Each voxel's penalty comes from the scenario's grid (the default one here).
        assert scores["alpha"].shape == (n_layers, N_VOXELS)
        assert set(np.unique(scores["alpha"])) <= {1.0, 10.0, 100.0, 1000.0, 10000.0}
        drift = scores["drift"]
        assert drift.ndim == 2 and drift.shape[1] == 3 and drift.dtype == np.int64
        assert np.isfinite(scores["r"]).all() and np.isfinite(trials["trial_r"]).all()
        assert sorted(trials["event"].tolist()) == list(range(N_EVENTS))
        # The warm-up events (the first replayed) are not scored, every other one is.
        n = scores["event_stats"][:, :, 0, 0]
        assert (n[:, trials["event"][:WARMUP]] == 0).all()
        assert (n[:, trials["event"][WARMUP:]] > 0).all()
        assert run["config"]["learning"]["lr"] == 3e-3 and run["config"]["encoder"]["lags"] == [0, 1, 2]
        assert run["mode"] == ("frozen" if name == "frozen" else "continuous")
    frozen, cont, shuf = runs["frozen"], runs["continuous"], runs["continuous-shuffled"]
    assert np.isnan(frozen["trials"]["loss"]).all()
    assert (frozen["trials"]["delta_w"] == 0).all()
    for run in (cont, shuf):
        assert np.isfinite(run["trials"]["loss"]).all() and (run["trials"]["loss"] > 0).all()
        assert (run["trials"]["delta_w"] > 0).all()
    assert cont["trials"]["event"].tolist() == list(range(N_EVENTS))
    assert shuf["trials"]["event"].tolist() != list(range(N_EVENTS))
    assert shuf["order"] == "shuffled"
    # The frozen network replays the same features in the same order: both recorded-order runs see
    # the same brain, but only the continuous one changes its features, so the scores differ.
    assert not np.array_equal(frozen["scores"]["r"], cont["scores"]["r"])


def test_summary_json(finished, capsys):
    _, results, _ = finished
    assert main(["summary", str(results), "--json", "--n-boot", "200", "--n-perm", "200"]) == 0
    summary = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in summary["runs"]}
    assert sorted(rows) == ["continuous", "continuous-shuffled", "frozen"]
    for row in rows.values():
        significant, total = row["voxels_fdr05"]["sub-01"]
        assert total == N_VOXELS and 0 <= significant <= total
        assert 1.0 <= row["alpha_median"] <= 10000.0  # a median of the grid's values
        assert row["drift_voxels"][1] == N_VOXELS and 0 <= row["drift_voxels"][0] <= N_VOXELS
    drift = {d["variant"]: d["layers"]["layer_1"] for d in summary["drift"]}
    assert sorted(drift) == ["continuous", "continuous-shuffled"]  # a frozen network never drifts
    assert drift["continuous"]["n_sounds"] == 6 and -1 <= drift["continuous"]["r"] <= 1
    aligned = {a["variant"]: a for a in summary["alignment"]}
    # In recorded order both runs score the same events; a shuffled run loses the trials whose
    # event fell in the frozen run's warm-up.
    assert aligned_n(summary, "continuous") == N_EVENTS - WARMUP
    assert aligned_n(summary, "continuous-shuffled") < N_EVENTS - WARMUP
    assert sorted(aligned) == ["continuous", "continuous-shuffled"]
    for a in aligned.values():
        assert a["against"] == "frozen" and a["layers"]["layer_1"]["n_trials"] <= N_EVENTS - WARMUP
        assert -1 <= a["layers"]["layer_1"]["r"] <= 1 and 0 < a["layers"]["layer_1"]["p"] <= 1
    for row in rows.values():
        assert {"name", "mode", "order", "score", "ci95", "layers"} <= set(row)
        assert row["ci95"][0] <= row["score"] <= row["ci95"][1]
        assert row["score"] == max(row["layers"].values())
        assert -1 <= row["score"] <= 1
    assert (rows["frozen"]["mode"], rows["continuous-shuffled"]["order"]) == ("frozen", "shuffled")
    pairs = [(c["a"], c["b"]) for c in summary["comparisons"]]
    assert pairs == [("continuous", "frozen"), ("continuous", "continuous-shuffled")]
    for c in summary["comparisons"]:
        assert {"a", "b", "delta", "ci95", "p"} <= set(c)
        assert np.isfinite(c["delta"]) and c["ci95"][0] <= c["ci95"][1] and 0 < c["p"] <= 1
    # Same order, so the same events are scored: the delta is the difference of the scores. (The
    # shuffled run left other events in its warm-up, so its comparison uses fewer.)
    frozen = summary["comparisons"][0]
    assert frozen["delta"] == pytest.approx(rows["continuous"]["score"] - rows["frozen"]["score"],
                                            rel=1e-9, abs=1e-12)
    assert frozen["n_sounds"] == 6


def test_rerun_skips_finished_runs(finished, capsys):
    argv, results, _ = finished
    before = {r["run_id"]: r["trials"]["loss"] for r in read_runs(results)}
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("already complete, skipped") == 3
    assert "run: 0 run(s) written" in out
    after = {r["run_id"]: r["trials"]["loss"] for r in read_runs(results)}
    assert before.keys() == after.keys()
    for run_id in before:
        np.testing.assert_array_equal(before[run_id], after[run_id])


def test_runs_made_before_a_key_existed_count_as_the_same_settings(finished, tmp_path, capsys):
    """A run stored without keys added since (here order_seed and model.trainable_layers) is
    still complete with the same settings: their defaults are what it ran with."""
    import shutil

    import zarr

    argv, results, _ = finished
    older = tmp_path / "older.zarr"
    shutil.copytree(results, older)
    group = zarr.open_group(str(older), mode="a")["runs/continuous/sub-01/seed-0"]
    config = dict(group.attrs["config"])
    del config["order_seed"]
    config["model"] = {k: v for k, v in config["model"].items() if k != "trainable_layers"}
    group.attrs["config"] = config
    at = argv.index("--results") + 1
    assert main([*argv[:at], str(older), *argv[at + 1:]]) == 0
    assert capsys.readouterr().out.count("already complete, skipped") == 3


def test_changed_setting_needs_force(finished, capsys):
    argv, results, _ = finished
    assert main([*argv, "--set", "learning.lr=1e-3"]) == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith("cortexreplay run: error: ")
    assert f"{results} already holds run " in lines[0]
    assert "made with other settings; pass --force to replace it or choose another --results" in lines[0]
    assert len(read_runs(results)) == 3


def test_run_uses_a_running_encoder_service_and_leaves_it_running(finished, tmp_path, capsys):
    """`--encoder ENDPOINT`: the same frozen run through a service we started ourselves."""
    import threading

    from encoders.client import EncoderClient
    from encoders.service import EncoderService

    service = EncoderService("tcp://127.0.0.1:*")
    thread = threading.Thread(target=service.serve_forever, daemon=True)
    thread.start()
    argv, results, _ = finished
    scenario = tmp_path / "frozen.toml"
    scenario.write_text(SCENARIO.split("[variants.frozen]")[0].replace(
        'compare = [["continuous", "frozen"], ["continuous", "continuous-shuffled"]]\n', "")
        + '[variants.frozen]\nmode = "frozen"\n')
    own = tmp_path / "own.zarr"
    rest = argv[2:]
    rest[rest.index("--results") + 1] = str(own)
    assert main(["run", str(scenario), *rest, "--encoder", service.endpoint]) == 0
    (mine,) = read_runs(own)
    (theirs,) = [r for r in read_runs(results) if r["variant"] == "frozen"]
    np.testing.assert_array_equal(mine["scores"]["event_stats"], theirs["scores"]["event_stats"])
    assert thread.is_alive()  # not shut down by the run
    client = EncoderClient(service.endpoint, timeout_s=10)
    client.shutdown()
    client.close()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_noise_ceiling_and_normalised_scores(finished, capsys):
    """The run stores each subject's noise ceiling; the summary reports ceiling-normalised scores."""
    import zarr

    from encoders.ceiling import CEILING_FORMULA
    from simulator.results import read_subject_arrays

    _, results, _ = finished
    ceilings = read_subject_arrays(results, "ceilings")
    assert list(ceilings) == ["sub-01"] and ceilings["sub-01"].shape == (N_VOXELS,)
    # The tiny cortex has SNR 2: a true ceiling of sqrt(2/3) = 0.82, estimated from 6 sounds.
    assert 0.5 < float(np.mean(ceilings["sub-01"])) < 1.0
    attrs = zarr.open_group(str(results), mode="r")["ceilings/sub-01"].attrs
    assert attrs["formula"] == CEILING_FORMULA and attrs["n_repeats"] == 2
    assert main(["summary", str(results), "--json", "--n-boot", "100", "--n-perm", "100"]) == 0
    summary = json.loads(capsys.readouterr().out)
    for row in summary["runs"]:
        assert row["score_normalised"] == pytest.approx(row["score"], abs=0.6)
    assert summary["ceiling"]["sub-01"]["formula"] == CEILING_FORMULA


def aligned_n(summary, variant):
    (a,) = [a for a in summary["alignment"] if a["variant"] == variant]
    return a["layers"]["layer_1"]["n_trials"]


def test_nan_frames_are_masked_dropped_counted_and_summarised(tmp_path, tiny_recording,
                                                              tiny_checkpoint, capsys):
    """The non-finite policy through a whole run: a voxel lost for a third of the session is
    masked (no score), a few scattered NaN and inf drop their frames, and the summary says so."""
    import shutil

    import zarr

    store = tmp_path / "rec.zarr"
    shutil.copytree(tiny_recording, store)
    responses = zarr.open_array(store / "subjects/sub-01/sessions/0/responses", mode="r+")
    Y = responses[...]
    n_frames = len(Y)
    Y[: n_frames // 3, 5] = np.nan          # voxel 5: lost for a third of the session
    Y[[10, 40, 41], [0, 7, 7]] = [np.inf, np.nan, -np.inf]  # 3 values in 3 frames, inside trials
    responses[...] = Y
    scenario = tmp_path / "nan.toml"
    scenario.write_text("mode = 'frozen'\n[encoder]\nlags = [0, 1]\nwarmup = 2\n")
    argv = ["run", str(scenario), "--store", str(store), "--results", str(tmp_path / "res.zarr"),
            "--set", f"model.checkpoint={tiny_checkpoint}", "--no-progress", "--jobs", "1"]
    assert main(argv) == 0
    (run,) = read_runs(tmp_path / "res.zarr")
    assert run["masked_voxels"] == 1 and np.isnan(run["scores"]["r"][:, 5]).all()
    assert np.isfinite(run["scores"]["r"][:, [0, 7]]).all()
    assert 1 <= run["dropped_frames"] <= 3  # frames 10, 40, 41, where trials' windows reach them
    capsys.readouterr()
    assert main(["summary", str(tmp_path / "res.zarr")]) == 0
    assert "1 voxel(s) masked (non-finite in more than 10% of their frames; no score)" in \
        capsys.readouterr().out
