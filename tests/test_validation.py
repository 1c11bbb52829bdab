"""`cortexreplay validate` at a reduced size: real synthetic cortices, real runs, real claims."""
import json
from dataclasses import replace

import numpy as np
import pytest

from replay.store import open_recording
from simulator.cortex import CortexSettings
from simulator.pretrain import PretrainSettings, pretrain
from simulator.scenario import resolve_scenario
from simulator.validation import (PLANS, Experiment, _synthesize_all, experiments, format_claims,
                                  lr_variant, run_validation, scenario_table)

# One reduced validation serves the module (a few minutes on 2 cores; more with other jobs).
pytestmark = pytest.mark.timeout(900)

# The full plan's structure at a size CI affords: 12 one-second sounds, 40 voxels, one cortex of
# each kind, still three learner seeds per learning variant.
TEST_PLAN = replace(PLANS["quick"], name="test", sounds=12, voxels=40, recording_seeds=1,
                    static_seeds=1, static_sounds=12, static_voxels=40, sweep_grid=(3e-4, 1e-3),
                    lr_grid=(3e-3,), warmup=4, n_boot=200, n_perm=200)


@pytest.fixture(scope="module")
def wide_checkpoint(tmp_path_factory):
    """The network whose layers differ, pretrained as briefly as ``tiny_checkpoint``."""
    settings = PretrainSettings(size=TEST_PLAN.wide_size, steps=4, warmup_steps=2, corpus_sounds=4,
                                clip_s=0.5)
    return pretrain(tmp_path_factory.mktemp("wide-checkpoint"), settings, log=None)


@pytest.fixture(scope="module")
def validated(tmp_path_factory, tiny_checkpoint, wide_checkpoint):
    out = tmp_path_factory.mktemp("validation")
    logged = []
    claims = run_validation(out, TEST_PLAN, checkpoint=tiny_checkpoint, jobs=2, log=logged.append,
                            wide_checkpoint=wide_checkpoint)
    return out, claims, logged


def test_the_plan_replays_every_cortex_with_learners_matched_to_its_teacher():
    exps = {e.name: e for e in experiments(PLANS["full"])}
    plastic = [e for name, e in exps.items() if name.startswith("plastic/")]
    static = [e for name, e in exps.items() if name.startswith("static/")]
    assert len(plastic) == 5 and len(static) == 20
    assert all(e.cortex.plasticity == 0 for e in static)
    for e in exps.values():  # the learner follows the teacher's update rule
        table = scenario_table(e, PLANS["full"], "ckpt")
        assert table["learning"]["steps_per_sound"] == e.cortex.teacher_steps
        if e.cortex.plasticity > 0:
            assert (e.lr, e.retention) == (e.cortex.plasticity, e.cortex.retention)
        scenario = resolve_scenario(table, e.name, e.name)
        assert len(scenario.runs(["sub-01"])) >= 1
    sweep = exps["plastic/seed-0"].variants
    assert {lr_variant(x) for x in (3e-4, 1e-3, 1e-2, 3e-2)} <= set(sweep)
    assert lr_variant(3e-3) not in sweep  # the teacher's rate is the 'continuous' variant itself
    assert not any(k.startswith("lr-") for k in exps["plastic/seed-4"].variants)
    second = f"{PLANS['full'].wide_size}/"
    wide = [e for name, e in exps.items() if name.startswith(second)]
    assert wide and all(e.network == "wide" for e in wide)
    assert all(e.network == "default" for name, e in exps.items() if not name.startswith(second))
    assert {e.cortex.read_layer for e in wide if e.cortex.plasticity == 0} == {"layer_3", "layer_1"}


def test_validate_judges_every_claim_and_writes_the_report(validated):
    out, claims, _ = validated
    assert [c.key for c in claims] == ["plastic", "unrelaxed", "static", "plasticity", "lr-sweep",
                                       "best-layer"]
    assert {c.status for c in claims} <= {"pass", "fail", "report"}
    assert next(c for c in claims if c.key == "unrelaxed").status == "report"
    report = json.loads((out / "validation.json").read_text())
    assert report["plan"]["name"] == "test"
    assert [c["key"] for c in report["claims"]] == [c.key for c in claims]
    text = (out / "validation.txt").read_text()
    assert text.strip() == format_claims(claims)
    for c in claims:
        assert f"[{c.status.upper()}] {c.statement}" in text


def test_the_planted_effect_is_found_in_the_plastic_cortex_and_not_in_the_static_one(validated):
    _, claims, _ = validated
    by_key = {c.key: c for c in claims}
    plastic = by_key["plastic"].figures["pretrained"]["pooled"]
    assert plastic["n_sounds"] == TEST_PLAN.sounds  # every sound is scored in both runs
    assert plastic["delta"] > 0.05 and plastic["significant_above"]
    static = by_key["static"].figures
    # The frozen network *is* the static teacher: continuous update can only move away from it.
    assert static["pretrained"]["per_recording"][0]["delta"] < 0
    assert static["pretrained"]["false_positives"] == 0


def test_the_figures_agree_with_the_runs_behind_them(validated):
    _, claims, _ = validated
    by_key = {c.key: c for c in claims}
    # The plasticity level equal to the plan's own reuses the plastic cortex's comparison.
    same = by_key["plasticity"].figures[f"{TEST_PLAN.plasticity:g}"]
    assert same["delta"] == pytest.approx(by_key["plastic"].figures["pretrained"]["pooled"]["delta"])
    levels = [by_key["plasticity"].figures[f"{x:g}"]["delta"] for x in sorted(TEST_PLAN.levels)]
    assert by_key["plasticity"].status == ("pass" if levels == sorted(set(levels)) else "fail")
    rates = by_key["lr-sweep"].figures["rates"]
    assert set(rates) == {f"{x:g}" for x in TEST_PLAN.sweep_grid}
    best = max(rates, key=lambda k: rates[k]["score"])
    assert by_key["lr-sweep"].figures["best"] == float(best)
    figures = dict(by_key["best-layer"].figures)
    for case in figures.values():
        if "best_minus_read" in case:  # zero where the search found the read-out itself
            assert (case["best_minus_read"]["delta"] == 0) == (case["best"] == case["read"])
    for network in ("default", TEST_PLAN.wide_size):
        similarity = figures.pop(f"adjacent_layer_cka/{network}")
        assert list(similarity) == ["cnn~layer_1", "layer_1~layer_2", "layer_2~layer_3",
                                    "layer_3~layer_4"]
        assert all(abs(v) <= 1 + 1e-9 for v in similarity.values())  # debiased: may dip below 0
    assert len(figures) == 6  # three cases on each network
    for case in figures.values():
        profile = case["profile"]
        assert case["best"] == max(profile, key=profile.get)
        assert all(-1 <= v <= 1 for v in profile.values())
        assert list(case["cka_to_read"]) == list(profile)
        assert case["cka_to_read"][case["read"]] == pytest.approx(1.0)
    verdicts = [case["verdict"] for case in figures.values()]
    assert set(verdicts) <= {"same", "adjacent", "equivalent", "far"}
    judged = "far" not in verdicts and any(
        min(case["cka_to_read"].values()) < TEST_PLAN.equivalent_cka for case in figures.values())
    assert by_key["best-layer"].status == ("pass" if judged else "fail")
    for rate in rates.values():
        assert rate["ci95"][0] <= rate["score"] <= rate["ci95"][1]


def test_a_second_validation_reuses_every_recording_and_run(validated, tiny_checkpoint,
                                                            wide_checkpoint):
    out, claims, _ = validated
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("recordings/**/*.zarr/zarr.json")}
    assert any(f"/{TEST_PLAN.wide_size}/" in str(p) for p in stamps)
    logged = []
    again = run_validation(out, TEST_PLAN, checkpoint=tiny_checkpoint, jobs=2, log=logged.append,
                           wide_checkpoint=wide_checkpoint)
    assert stamps and stamps == {p: p.stat().st_mtime_ns for p in stamps}
    assert not any("synthesizing" in line for line in logged)
    assert sum("already complete" in line for line in logged) > 20
    assert [(c.status, c.lines) for c in again] == [(c.status, c.lines) for c in claims]


@pytest.mark.parametrize("field, which", [
    ("other_read_layer", "checkpoint"),
    ("wide_other_read_layer", f"{TEST_PLAN.wide_size} checkpoint")])
def test_an_unknown_read_layer_is_refused_before_anything_is_made(tmp_path, tiny_checkpoint,
                                                                  wide_checkpoint, field, which):
    plan = replace(TEST_PLAN, **{field: "layer_9"})
    with pytest.raises(ValueError, match=rf"reads layer 'layer_9', but the {which}'s layers are"):
        run_validation(tmp_path / "v", plan, checkpoint=tiny_checkpoint,
                       wide_checkpoint=wide_checkpoint)
    assert not (tmp_path / "v").exists()


def test_reading_once_reads_each_finished_store_once(validated, monkeypatch):
    import simulator.summary as summary

    out, _, _ = validated
    path = out / "results" / "plastic" / "seed-0.zarr"
    with summary.reading_once():
        first = summary.layer_scores(path, "continuous")

        def no_more_reads(path):
            raise AssertionError(f"{path} read again")

        monkeypatch.setattr(summary, "read_runs", no_more_reads)
        assert summary.layer_scores(path, "continuous") == first  # served from what was read
    with pytest.raises(AssertionError, match="read again"):  # outside the block: read every time
        summary.layer_scores(path, "continuous")


def test_a_recording_made_again_drops_the_runs_replayed_from_the_old_one(tmp_path, tiny_checkpoint):
    def exp(voxels):
        cortex = CortexSettings(seed=0, sounds=4, duration_s=0.5, subjects=1, voxels=voxels,
                                plasticity=0.0, pre_s=1.0, post_s=1.0)
        return Experiment("static/seed-0", cortex, {"pretrained": {"mode": "frozen"}}, 1e-3, 1.0)

    checkpoints, logged = {"default": tiny_checkpoint}, []
    _synthesize_all(tmp_path, [exp(8)], checkpoints, 1, log=logged.append)
    runs = tmp_path / "results" / "static" / "seed-0.zarr"
    runs.mkdir(parents=True)
    _synthesize_all(tmp_path, [exp(8)], checkpoints, 1, log=logged.append)  # same settings: kept
    assert runs.exists() and len(logged) == 1
    _synthesize_all(tmp_path, [exp(12)], checkpoints, 1, log=logged.append)
    assert not runs.exists()
    made = open_recording(tmp_path / "recordings" / "static" / "seed-0.zarr").attrs["synthetic"]
    assert made["voxels"] == 12
