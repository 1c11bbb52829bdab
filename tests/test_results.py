"""Results store round trip, and the summary (scores, intervals, paired comparisons) built on it."""
import numpy as np
import pytest
import zarr

from encoders.scores import frame_stats, pearson_from_stats
from simulator.results import (FORMAT, ResultsError, RunResult, completed_config, open_results,
                               read_runs, results_attrs, write_run)
from simulator.summary import format_table, summarize

N_SOUNDS, REPEATS, N_FRAMES, N_VOXELS, WARMUP = 15, 2, 8, 6, 4
N_EVENTS = N_SOUNDS * REPEATS
LAYERS = ["cnn", "layer_1"]


def _result(variant, event_stats, order=None, seed=0, mode="continuous", subject="sub-01",
            config=None):
    """A RunResult shaped like the runner's, replaying ``order`` (event indices)."""
    order = np.arange(N_EVENTS) if order is None else np.asarray(order)
    rng = np.random.default_rng(seed)
    run_id = f"{variant}/{subject}/seed-{seed}"
    attrs = {"run_id": run_id, "variant": variant, "subject": subject, "seed": seed, "mode": mode,
             "order": "recorded",
             "config": config or {"mode": mode, "learning": {"lr": 1e-3}, "encoder": {"warmup": WARMUP},
                                  "data": {"session": "0", "tail_s": 6.0}},
             "layers": LAYERS, "delta_w_layers": LAYERS, "n_events": N_EVENTS}
    trials = {"event": order.astype(np.int64), "stimulus": (order % N_SOUNDS).astype(np.int64),
              "repeat": (order // N_SOUNDS).astype(np.int64),
              "loss": rng.random(N_EVENTS) if mode == "continuous" else np.full(N_EVENTS, np.nan),
              "delta_w": rng.random((N_EVENTS, len(LAYERS))),
              "trial_r": rng.random((N_EVENTS, len(LAYERS)))}
    pooled = event_stats.sum(axis=1)
    scores = {"r": pearson_from_stats(pooled), "r2": pearson_from_stats(pooled) ** 2,
              "event_stats": event_stats}
    return RunResult(run_id, attrs, trials, scores)


def _event_stats(seed, noise, order=None):
    """(n_layers, n_events, 6, n_voxels) of predictions ``O + noise[layer] * N(0, 1)``; the first
    WARMUP events of ``order`` unscored. The brain O is the same for every call."""
    brain = np.random.default_rng(1234).standard_normal((N_EVENTS, N_FRAMES, N_VOXELS))
    rng = np.random.default_rng(seed)
    order = np.arange(N_EVENTS) if order is None else np.asarray(order)
    out = np.zeros((len(LAYERS), N_EVENTS, 6, N_VOXELS))
    for i, sigma in enumerate(noise):
        for e in order[WARMUP:]:
            out[i, e] = frame_stats(brain[e] + sigma * rng.standard_normal(brain[e].shape), brain[e])
    return out


def test_write_read_round_trip(tmp_path):
    root = open_results(tmp_path / "res.zarr", scenario={"compare": [["a", "b"]]})
    result = _result("a", _event_stats(0, [1.0, 0.5]), config={"learning": {"lr": 3e-3}, "seeds": [0]})
    write_run(root, result)
    (run,) = read_runs(tmp_path / "res.zarr")
    assert run["complete"] is True
    for key, value in result.attrs.items():
        assert run[key] == value
    for section in ("trials", "scores"):
        assert sorted(run[section]) == sorted(getattr(result, section))
        for name, value in getattr(result, section).items():
            np.testing.assert_array_equal(run[section][name], value)
            assert run[section][name].dtype == np.asarray(value).dtype
    group = zarr.open_group(str(tmp_path / "res.zarr"), mode="r")["runs/a/sub-01/seed-0"]
    assert group["scores/r"].metadata.dimension_names == ("layer", "voxel")
    assert group["trials/delta_w"].metadata.dimension_names == ("trial", "delta_w_layer")
    assert group["trials/loss"].metadata.dimension_names == ("trial",)
    attrs = results_attrs(tmp_path / "res.zarr")
    assert attrs["format"] == FORMAT and attrs["scenario"] == {"compare": [["a", "b"]]}
    assert "sqrt" in attrs["score_formula"]


def test_read_runs_in_order_and_skips_incomplete_runs(tmp_path):
    root = open_results(tmp_path / "res.zarr")
    stats = _event_stats(0, [1.0, 1.0])
    for variant, seed in (("b", 1), ("a", 0), ("b", 0)):
        write_run(root, _result(variant, stats, seed=seed))
    root["runs/b/sub-01/seed-1"].attrs["complete"] = False  # as if the writer died mid-run
    assert [r["run_id"] for r in read_runs(tmp_path / "res.zarr")] == ["a/sub-01/seed-0",
                                                                      "b/sub-01/seed-0"]


def test_completed_config(tmp_path):
    root = open_results(tmp_path / "res.zarr")
    config = {"mode": "continuous", "learning": {"lr": 3e-3}, "seeds": [0, 1]}
    assert completed_config(root, "a/sub-01/seed-0") is None
    write_run(root, _result("a", _event_stats(0, [1.0, 1.0]), config=config))
    assert completed_config(root, "a/sub-01/seed-0") == config
    assert completed_config(root, "a/sub-01/seed-1") is None
    root["runs/a/sub-01/seed-0"].attrs["complete"] = False
    assert completed_config(root, "a/sub-01/seed-0") is None


def test_write_run_replaces_a_previous_run(tmp_path):
    root = open_results(tmp_path / "res.zarr")
    first = _result("a", _event_stats(0, [1.0, 1.0]))
    first.trials["extra"] = np.ones(N_EVENTS)
    write_run(root, first)
    second = _result("a", _event_stats(1, [2.0, 2.0]), config={"learning": {"lr": 1.0}})
    write_run(root, second)
    (run,) = read_runs(tmp_path / "res.zarr")
    assert "extra" not in run["trials"]
    assert run["config"] == {"learning": {"lr": 1.0}}
    np.testing.assert_array_equal(run["scores"]["event_stats"], second.scores["event_stats"])


def test_reopening_keeps_the_runs(tmp_path):
    write_run(open_results(tmp_path / "res.zarr"), _result("a", _event_stats(0, [1.0, 1.0])))
    open_results(tmp_path / "res.zarr", scenario={"compare": []})
    assert len(read_runs(tmp_path / "res.zarr")) == 1


def test_stores_that_are_not_results_are_refused(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(ResultsError, match="folder exists and is not a results store; choose another --results"):
        open_results(tmp_path / "folder")
    other = zarr.open_group(str(tmp_path / "rec.zarr"), mode="w")
    other.attrs["format"] = "cortexreplay.recording"
    with pytest.raises(ResultsError, match="is a 'cortexreplay.recording' store, not a results store"):
        open_results(tmp_path / "rec.zarr")
    with pytest.raises(ResultsError, match="is not a results store"):
        read_runs(tmp_path / "rec.zarr")
    with pytest.raises(ResultsError, match=r"no results store at .*missing\.zarr \(make one with "
                                           r"'cortexreplay run'\)"):
        read_runs(tmp_path / "missing.zarr")


def test_empty_store_has_no_runs(tmp_path):
    open_results(tmp_path / "empty.zarr")
    assert read_runs(tmp_path / "empty.zarr") == []
    with pytest.raises(ValueError, match="holds no complete run yet"):
        summarize(tmp_path / "empty.zarr")


@pytest.fixture
def store(tmp_path):
    """good: layer_1 predicts well; poor: two seeds, both layers poor; twin: good's stats;
    good-reordered: good's stats replayed in another order (other warm-up events)."""
    path = tmp_path / "res.zarr"
    root = open_results(path, scenario={"compare": [["good", "poor"], ["good", "twin"],
                                                    ["good", "good-reordered"], ["good", "absent"]]})
    good = _event_stats(0, [3.0, 0.5])
    write_run(root, _result("good", good, mode="frozen"))
    for seed in (0, 1):
        write_run(root, _result("poor", _event_stats(10 + seed, [3.0, 3.0]), seed=seed))
    write_run(root, _result("twin", good.copy()))
    order = np.random.default_rng(5).permutation(N_EVENTS)
    reordered = _event_stats(20, [3.0, 0.5], order)
    common = np.intersect1d(order[WARMUP:], np.arange(WARMUP, N_EVENTS))
    reordered[:, common] = good[:, common]
    write_run(root, _result("good-reordered", reordered, order=order))
    return path, good, common


def test_summary_scores_and_comparisons(store):
    path, good, common = store
    summary = summarize(path, n_boot=300, n_perm=300, seed=0)
    assert summary["results"] == str(path)
    rows = {r["name"]: r for r in summary["runs"]}
    assert sorted(rows) == ["good", "good-reordered", "poor", "twin"]
    g = rows["good"]
    assert g["best_layer"] == "layer_1" and g["mode"] == "frozen" and g["order"] == "recorded"
    expected = pearson_from_stats(good[1, WARMUP:].sum(axis=0)).mean()
    assert g["score"] == pytest.approx(expected, rel=1e-12)
    assert g["layers"]["layer_1"] == g["score"] > g["layers"]["cnn"]
    assert g["ci95"][0] < g["score"] < g["ci95"][1]
    assert rows["poor"]["n_runs"] == 2 and rows["poor"]["seeds"] == [0, 1]
    assert rows["poor"]["subjects"] == ["sub-01"]

    comps = {(c["a"], c["b"]): c for c in summary["comparisons"]}
    assert sorted(comps) == [("good", "good-reordered"), ("good", "poor"), ("good", "twin")]
    better = comps[("good", "poor")]
    assert better["delta"] > 0.3
    assert 0 < better["ci95"][0] < better["delta"] < better["ci95"][1]
    assert better["p"] < 0.05
    assert better["n_sounds"] == N_SOUNDS
    for twin in ("twin", "good-reordered"):  # identical on the events both scored
        c = comps[("good", twin)]
        assert c["delta"] == 0.0 and c["ci95"] == [0.0, 0.0] and c["p"] == 1.0
    # Like for like: the reordered comparison is computed on the events both runs scored.
    assert comps[("good", "good-reordered")]["n_sounds"] == len(np.unique(common % N_SOUNDS))


def test_summary_is_reproducible(store):
    path, _, _ = store
    assert summarize(path, n_boot=100, n_perm=100) == summarize(path, n_boot=100, n_perm=100)


def test_format_table(store):
    path, _, _ = store
    summary = summarize(path, n_boot=100, n_perm=100)
    table = format_table(summary)
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["run", "mode", "order", "score"]
    blank = lines.index("")
    run_lines, comparison_lines = lines[1:blank], lines[blank + 1:]
    assert len(run_lines) == len(summary["runs"]) and comparison_lines[0].split()[:3] == ["a", "b", "delta"]
    for row in summary["runs"]:
        (line,) = [ln for ln in run_lines if ln.split()[0] == row["name"]]
        assert f"{row['score']:.3f}" in line and "layer_1=" in line and row["mode"] in line
    for c in summary["comparisons"]:
        assert any(ln.split()[:2] == [c["a"], c["b"]] and f"{c['delta']:+.3f}" in ln
                   for ln in comparison_lines)


def test_summary_pairs_runs_by_subject_and_seed(tmp_path):
    """Two subjects with different voxel counts, two seeds, and one seed-free frozen run each."""
    root = open_results(tmp_path / "res.zarr", scenario={"compare": [["good", "frozen"]]})
    for subject, n_voxels in (("sub-01", 6), ("sub-02", 4)):
        write_run(root, _result("frozen", _event_stats(10, [1.0, 1.0])[..., :n_voxels],
                                mode="frozen", subject=subject))
        for seed in (0, 1):
            write_run(root, _result("good", _event_stats(seed, [0.3, 0.3])[..., :n_voxels],
                                    seed=seed, subject=subject))
    summary = summarize(tmp_path / "res.zarr", n_boot=200, n_perm=200)
    good = next(r for r in summary["runs"] if r["name"] == "good")
    assert good["n_runs"] == 4 and good["subjects"] == ["sub-01", "sub-02"]
    (comp,) = summary["comparisons"]
    assert comp["subjects"] == ["sub-01", "sub-02"]
    assert comp["delta"] > 0 and comp["ci95"][0] > 0 and comp["p"] < 0.05


def test_summary_refuses_to_pair_mismatched_seeds(tmp_path):
    root = open_results(tmp_path / "res.zarr", scenario={"compare": [["a", "b"]]})
    for variant, seeds in (("a", (0, 1)), ("b", (0, 2))):
        for seed in seeds:
            write_run(root, _result(variant, _event_stats(seed, [1.0, 1.0]), seed=seed))
    with pytest.raises(ValueError, match=r"cannot pair variants 'a' \(seeds \[0, 1\]\) and 'b'"):
        summarize(tmp_path / "res.zarr", n_boot=50, n_perm=50)
