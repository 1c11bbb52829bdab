"""Results taken elsewhere: the store opened with xarray, and the run and trial tables of
`cortexreplay export`, on a store written by a real replay."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

from encoders.scores import STAT_NAMES
from simulator.cli import main
from simulator.export import export, open_run, open_runs, run_table, trial_table
from simulator.results import RunWriter, open_results, read_runs
from simulator.run import run_scenario
from simulator.scenario import resolve_scenario
from simulator.summary import summarize

pytestmark = pytest.mark.timeout(300)

SUBSET = ["cnn", "layer_1"]  # the layers the "frozen" variant scores: fewer than it has
SCENARIO = {"mode": "continuous", "seeds": [0], "learning": {"lr": 3e-3},
            "encoder": {"lags": [0, 1], "warmup": 2},
            "variants": {"frozen": {"mode": "frozen", "encoder": {"layers": SUBSET}},
                         "continuous": {}}}
N_EVENTS, N_VOXELS, N_SOUNDS = 12, 24, 6
RUN_IDS = ["continuous/sub-01/seed-0", "frozen/sub-01/seed-0"]


@pytest.fixture(scope="module")
def results(tmp_path_factory, tiny_recording, tiny_checkpoint):
    """Two real runs, the frozen one scoring two layers only."""
    raw = {**SCENARIO, "model": {"checkpoint": str(tiny_checkpoint)}}
    scenario = resolve_scenario(raw, "export", "export test")
    path = tmp_path_factory.mktemp("export") / "res.zarr"
    written = run_scenario(scenario, str(tiny_recording), str(path), jobs=2, log=lambda _: None,
                           progress_bar=False)
    assert sorted(written) == RUN_IDS
    return path


def _run(path, run_id):
    return zarr.open_group(str(path), mode="r")[f"runs/{run_id}"]


def test_xarray_opens_every_group_with_named_dimensions(results):
    for run_id in RUN_IDS:
        group = _run(results, run_id)
        layers, all_layers = group.attrs["layers"], group.attrs["delta_w_layers"]
        trials = xr.open_zarr(results, group=f"runs/{run_id}/trials", consolidated=False)
        assert dict(trials.sizes) == {"trial": N_EVENTS, "layer": len(layers),
                                      "delta_w_layer": len(all_layers)}
        assert trials.delta_w.dims == ("trial", "delta_w_layer")
        assert trials.trial_r.dims == ("trial", "layer") and trials.loss.dims == ("trial",)
        assert trials.layer.values.tolist() == layers
        assert trials.delta_w_layer.values.tolist() == all_layers
        for name, arr in group["trials"].arrays():
            np.testing.assert_array_equal(trials[name].values, arr[...])
            assert trials[name].dtype == arr.dtype or name in ("layer", "delta_w_layer")
        scores = xr.open_zarr(results, group=f"runs/{run_id}/scores", consolidated=False)
        assert scores.r.dims == scores.alpha.dims == ("layer", "voxel")
        assert scores.event_stats.dims == ("layer", "event", "stat", "voxel")
        assert scores.sizes["voxel"] == N_VOXELS and scores.sizes["event"] == N_EVENTS
        assert scores.layer.values.tolist() == layers
        assert scores.stat.values.tolist() == list(STAT_NAMES)
        for name, arr in group["scores"].arrays():
            np.testing.assert_array_equal(scores[name].values, arr[...])
        np.testing.assert_array_equal(scores.r.sel(layer="layer_1").values,
                                      group["scores/r"][layers.index("layer_1")])
    assert len(_run(results, RUN_IDS[0]).attrs["layers"]) > len(SUBSET)
    root = zarr.open_group(str(results), mode="r")
    for name, dims in (("ceilings", ("voxel",)), ("brain_drift", ("stimulus",)),
                       ("voxels", ("voxel", "axis"))):
        ds = xr.open_zarr(results, group=name, consolidated=False)
        assert ds["sub-01"].dims == dims
        np.testing.assert_array_equal(ds["sub-01"].values, root[f"{name}/sub-01"][...])
    assert xr.open_zarr(results, group="voxels", consolidated=False).sizes == {"voxel": N_VOXELS,
                                                                               "axis": 3}
    assert xr.open_zarr(results, group="brain_drift", consolidated=False).sizes["stimulus"] == \
        N_SOUNDS


def test_a_run_written_trial_by_trial_gets_its_labels_too(tmp_path):
    """As a live run writes: records appended, then the scores; the labels are not records."""
    layers, all_layers = ["cnn", "layer_2"], ["cnn", "layer_1", "layer_2"]
    writer = RunWriter(open_results(tmp_path / "res.zarr"), "live/sub-01/seed-0",
                       {"run_id": "live/sub-01/seed-0", "layers": layers,
                        "delta_w_layers": all_layers})
    for i in range(3):
        writer.append_trial({"event": i, "loss": 0.5 * i, "delta_w": [i, 2.0, 3.0],
                             "trial_r": [0.1, 0.2]})
    writer.finish({"r": np.ones((2, 4)), "drift": np.zeros((0, 3), np.int64)})
    trials = xr.open_zarr(tmp_path / "res.zarr", group="runs/live/sub-01/seed-0/trials",
                          consolidated=False)
    assert trials.delta_w.sel(delta_w_layer="layer_1").values.tolist() == [2.0, 2.0, 2.0]
    assert trials.trial_r.sel(layer="layer_2").values.tolist() == [0.2, 0.2, 0.2]
    scores = xr.open_zarr(tmp_path / "res.zarr", group="runs/live/sub-01/seed-0/scores",
                          consolidated=False)
    assert scores.layer.values.tolist() == layers
    assert scores.field.values.tolist() == ["layer", "trial", "voxel"]
    (run,) = read_runs(tmp_path / "res.zarr")
    assert sorted(run["trials"]) == ["delta_w", "event", "loss", "trial_r"]
    assert sorted(run["scores"]) == ["drift", "r"]


def test_open_run_merges_trials_and_scores_with_labelled_layers(results):
    ds = open_run(results, "frozen/sub-01/seed-0")
    group = _run(results, "frozen/sub-01/seed-0")
    assert ds.layer.values.tolist() == SUBSET
    assert ds.delta_w_layer.values.tolist() == group.attrs["delta_w_layers"]
    assert ds.r.dims == ("layer", "voxel") and ds.trial_r.dims == ("trial", "layer")
    assert ds.delta_w.dims == ("trial", "delta_w_layer")
    np.testing.assert_array_equal(ds.r.sel(layer="layer_1").values, group["scores/r"][1])
    np.testing.assert_array_equal(ds.delta_w.values, group["trials/delta_w"][...])
    np.testing.assert_array_equal(ds.event.values, group["trials/event"][...])
    # The trials' "event" keeps its name; event_stats' dimension is renamed next to it.
    assert ds.event_stats.dims == ("layer", "recorded_event", "stat", "voxel")
    per_trial = ds.event_stats.isel(recorded_event=ds.event)
    assert per_trial.dims == ("layer", "trial", "stat", "voxel")
    np.testing.assert_array_equal(per_trial.values,
                                  group["scores/event_stats"][...][:, group["trials/event"][...]])
    assert ds.pooled_cnn.dims == ("trial", "cnn_feature")
    np.testing.assert_array_equal(ds.pooled_cnn.values, group["trials/pooled/cnn"][...])
    assert ds.attrs["run_id"] == "frozen/sub-01/seed-0" and ds.attrs["layers"] == SUBSET
    assert json.loads(ds.attrs["config"]) == group.attrs["config"]
    assert "sqrt" in ds.attrs["score_formula"]
    assert list(open_runs(results)) == RUN_IDS
    with pytest.raises(ValueError, match="no complete run 'frozen/sub-01/seed-9'.*seed-0"):
        open_run(results, "frozen/sub-01/seed-9")


def test_run_table_scores_each_run_at_its_layers(results):
    table = run_table(results)
    assert table["run_id"].tolist() == RUN_IDS
    for column in ("variant", "subject", "seed", "mode", "order", "best_layer", "score",
                   "score.cnn", "score.layer_2", "n_events", "n_trials", "masked_voxels",
                   "dropped_frames", "learning.lr", "encoder.warmup", "data.session"):
        assert column in table.columns, column
    for row in table.to_dict("records"):
        group = _run(results, row["run_id"])
        r = group["scores/r"][...]
        for k, layer in enumerate(group.attrs["layers"]):
            assert row[f"score.{layer}"] == np.nanmean(r[k])
        assert row["best_layer"] == group.attrs["layers"][int(np.argmax(np.nanmean(r, axis=1)))]
        assert row["score"] == np.nanmean(r, axis=1).max()
        assert row["n_trials"] == row["n_events"] == N_EVENTS
    frozen = table.set_index("run_id").loc["frozen/sub-01/seed-0"]
    assert np.isnan(frozen["score.layer_2"])  # not scored there
    assert json.loads(frozen["encoder.layers"]) == SUBSET and frozen["mode"] == "frozen"
    assert (table["learning.lr"] == 3e-3).all() and (table["encoder.warmup"] == 2).all()
    # Each variant has one run here: the run's own score is the summary's.
    summary = {row["name"]: row for row in summarize(results, n_boot=10, n_perm=10)["runs"]}
    for row in table.to_dict("records"):
        assert row["score"] == pytest.approx(summary[row["variant"]]["score"], abs=1e-12)
        assert row["best_layer"] == summary[row["variant"]]["best_layer"]


def test_trial_table_has_every_record(results):
    table = trial_table(results)
    assert len(table) == len(RUN_IDS) * N_EVENTS
    for run_id, rows in table.groupby("run_id", sort=False):
        group = _run(results, run_id)
        assert rows["trial"].tolist() == list(range(N_EVENTS))
        for name, arr in group["trials"].arrays():
            if arr.ndim == 1 and name not in ("layer", "delta_w_layer"):
                np.testing.assert_array_equal(rows[name].to_numpy(), arr[...])
        for k, layer in enumerate(group.attrs["delta_w_layers"]):
            np.testing.assert_array_equal(rows[f"delta_w.{layer}"], group["trials/delta_w"][:, k])
        for k, layer in enumerate(group.attrs["layers"]):
            np.testing.assert_array_equal(rows[f"trial_r.{layer}"], group["trials/trial_r"][:, k])
    frozen = table[table["variant"] == "frozen"]
    assert frozen["trial_r.layer_2"].isna().all() and (frozen["delta_w.layer_2"] == 0).all()
    assert not any(c.startswith("pooled") for c in table.columns)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_round_trips_through_pandas(results, tmp_path, fmt):
    read = {"csv": pd.read_csv, "parquet": pd.read_parquet}[fmt]
    written = export(results, fmt, tmp_path / "out")
    assert written == [(tmp_path / "out" / f"runs.{fmt}", len(RUN_IDS)),
                       (tmp_path / "out" / f"trials.{fmt}", len(RUN_IDS) * N_EVENTS)]
    for (path, n_rows), table in zip(written, (run_table(results), trial_table(results))):
        back = read(path)
        assert len(back) == n_rows and back.columns.tolist() == table.columns.tolist()
        for column in table.columns:
            if pd.api.types.is_numeric_dtype(table[column]):
                np.testing.assert_array_equal(back[column].to_numpy(float),
                                              table[column].to_numpy(float), err_msg=column)
            else:  # an empty string reads back from CSV as a missing value
                assert back[column].fillna("").astype(str).tolist() == \
                    table[column].fillna("").astype(str).tolist(), column
    runs = read(written[0][0])
    assert runs["learning.lr"].tolist() == [_run(results, r).attrs["config"]["learning"]["lr"]
                                            for r in RUN_IDS]


def test_export_keeps_existing_files_unless_forced(results, tmp_path):
    out = tmp_path / "out"
    export(results, "csv", out)
    (out / "runs.csv").write_text("mine\n")
    with pytest.raises(ValueError, match=r"already exist: .*runs\.csv.*--force"):
        export(results, "csv", out)
    assert (out / "runs.csv").read_text() == "mine\n"
    export(results, "csv", out, force=True)
    assert len(pd.read_csv(out / "runs.csv")) == len(RUN_IDS)


def test_parquet_without_pyarrow_says_what_to_install(results, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if it were not installed
    with pytest.raises(ValueError, match=r"pip install pyarrow .*cortexreplay\[parquet\]"):
        export(results, "parquet", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_writes_next_to_the_store_and_says_what(results, capsys):
    assert main(["export", str(results)]) == 0
    out = results.with_name("res-export")
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"export: wrote {out / 'runs.csv'} ({len(RUN_IDS)} rows)",
                     f"export: wrote {out / 'trials.csv'} ({len(RUN_IDS) * N_EVENTS} rows)"]
    assert main(["export", str(results)]) == 2  # and the second time, nothing is overwritten
    assert "--force" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["{missing}"], "no results store at"),
    (["{recording}"], "is not a results store"),
    (["{empty}"], "holds no complete run"),
    (["{results}", "--format", "xlsx"], "Allowed values are 'csv' and 'parquet', but got 'xlsx'"),
])
def test_cli_bad_input_is_one_line(results, tiny_recording, tmp_path, capsys, argv, message):
    open_results(tmp_path / "empty.zarr")
    paths = {"missing": tmp_path / "nope.zarr", "recording": tiny_recording,
             "empty": tmp_path / "empty.zarr", "results": results}
    assert main(["export", *(a.format(**paths) for a in argv)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cortexreplay export: error: ")
    assert message in err


def test_cli_error_as_a_process(tmp_path):
    script = Path(sys.executable).with_name("cortexreplay")
    command = [str(script)] if script.exists() else [
        sys.executable, "-c", "import sys; from simulator.cli import main; sys.exit(main())"]
    proc = subprocess.run([*command, "export", str(tmp_path / "nope.zarr")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"cortexreplay export: error: no results store at "
                                        f"{tmp_path / 'nope.zarr'} (make one with 'cortexreplay "
                                        f"run')"]
