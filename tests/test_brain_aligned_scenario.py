"""scenarios/brain_aligned.toml (and its SoundNet twin) through the CLI on a real synthetic fMRI
recording of several sessions: a real encoder process, real networks, a real results store."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simulator.cli import main
from simulator.cortex import CortexSettings, synthesize
from simulator.results import read_runs
from simulator.soundnet import build_soundnet, save_soundnet

pytestmark = pytest.mark.timeout(600)
SCENARIOS = Path(__file__).parent.parent / "scenarios"
# Smaller than the shipped file's, so that the whole scenario runs in well under a minute.
SMALL = ["--set", "alignment.epochs=2", "--set", "probe.sounds=16", "--set", "probe.duration_s=0.5",
         "--set", "encoder.warmup=2", "--set", "data.tail_s=6.0"]


@pytest.fixture(scope="module")
def fmri_store(tmp_path_factory, tiny_checkpoint):
    """4 sessions of 3 one-second sounds x 2, 10 parcels at TR 1.49 s, a plastic teacher."""
    out = tmp_path_factory.mktemp("fmri") / "fmri.zarr"
    settings = CortexSettings.fmri(sounds=12, duration_s=1.0, subjects=1, voxels=10, repeats=2,
                                   plasticity=3e-3, retention=0.9, snr=2.0, teacher_steps=1,
                                   pre_s=2.0, post_s=6.0)
    return synthesize(out, tiny_checkpoint, settings, log=None)


def _run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_brain_aligned_scenario_reports_held_out_r2_and_probe(fmri_store, tiny_checkpoint, tmp_path,
                                                              capsys):
    results = tmp_path / "ba.zarr"
    code, _, err = _run(capsys, "run", str(SCENARIOS / "brain_aligned.toml"), "--store",
                        str(fmri_store), "--results", str(results), "--set",
                        f"model.checkpoint={tiny_checkpoint}", "--no-progress", *SMALL)
    assert code == 0, err
    runs = {r["variant"]: r for r in read_runs(results)}
    assert sorted(runs) == ["brain-aligned", "brain-continuous", "continuous", "pretrained", "random"]
    aligned = runs["brain-aligned"]
    assert aligned["alignment"]["sessions"] == ["0", "1", "2"]
    assert aligned["heldout"]["sse"].shape == (3, 6, 10)  # networks x held-out trials x parcels
    assert "heldout" not in runs["pretrained"]
    for r in runs.values():
        assert r["probe"]["correct"].shape[1] == 8 and r["probe_summary"]["n_test"] == 8
    # brain-continuous learned from the brain: its deepest layer moved from the second trial on
    # (the head starts at zero, so the first step reaches the head alone), its cnn never.
    dw = runs["brain-continuous"]["trials"]["delta_w"]
    layers = runs["brain-continuous"]["delta_w_layers"]
    assert dw[0, layers.index("layer_4")] == 0 and dw[1:, layers.index("layer_4")].min() > 0
    assert dw[:, layers.index("cnn")].max() == 0

    code, text, _ = _run(capsys, "summary", str(results))
    assert code == 0
    assert "held-out R² of the brain-aligned head" in text
    assert "frozen+head" in text and "random+head" in text and "brain-aligned − frozen+head" in text
    assert "downstream linear probe" in text
    code, out, _ = _run(capsys, "summary", str(results), "--json")
    summary = json.loads(out)
    (row,) = summary["heldout"]
    assert row["networks"] == ["brain-aligned", "frozen", "random"]
    for name in row["networks"]:
        low, high = row["ci95"][name]
        assert low <= row["r2"][name] <= high and np.isfinite([low, high]).all()
    for name in ("frozen", "random"):
        assert row["delta"][name] == pytest.approx(row["r2"]["brain-aligned"] - row["r2"][name])
    probe = {p["variant"]: p for p in summary["probe"]}
    assert sorted(probe) == sorted(runs)
    for p in probe.values():
        assert p["ci95"][0] <= p["accuracy"] <= p["ci95"][1] and p["n_test"] == 8
        assert sorted(p["by_layer"]) == ["cnn", "layer_1", "layer_2", "layer_3", "layer_4"]
    assert "intervals are not reliable" in text  # 3 held-out sounds
    # Frozen and brain-aligned replays do not learn; the encoder saw the glover design.
    assert runs["brain-aligned"]["config"]["encoder"]["hrf"] == "glover"
    assert np.all(runs["pretrained"]["trials"]["delta_w"] == 0)
    # brain-continuous learns during the replay: its weight change is set against its gain.
    assert any(a["variant"] == "brain-continuous" for a in summary["alignment"])

    # The report and the exported tables carry the same numbers.
    code, _, err = _run(capsys, "report", str(results), "--out", str(tmp_path / "report"),
                        "--n-boot", "200", "--n-perm", "200")
    assert code == 0, err
    page = (tmp_path / "report" / "index.html").read_text()
    assert "Brain-aligned fine-tuning: held-out R²" in page and "Downstream probe" in page
    code, _, err = _run(capsys, "export", str(results), "--out", str(tmp_path / "tables"))
    assert code == 0, err
    table = pd.read_csv(tmp_path / "tables" / "runs.csv").set_index("variant")
    for name in row["networks"]:
        assert table.loc["brain-aligned", f"heldout_r2.{name}"] == pytest.approx(
            row["r2"][name], abs=1e-9)
    assert np.isnan(table.loc["pretrained", "heldout_r2.frozen"])
    assert table.loc["pretrained", "probe_accuracy"] == pytest.approx(probe["pretrained"]["accuracy"])


@pytest.mark.parametrize("setting, message", [
    ("probe.sounds=8", "probe.sounds = 8 with probe.test_fraction = 0.5 leaves too few sounds"),
    ("alignment.validation_fraction=0.01", "leaves 0 of the training sessions' 9 sounds"),
    ('alignment.train_from="layer_4"',
     "alignment.train_from ('layer_4') lies above alignment.layer ('layer_2')"),
])
def test_bad_brain_settings_fail_before_any_run(fmri_store, tiny_checkpoint, tmp_path, capsys,
                                                setting, message):
    argv = ["run", str(SCENARIOS / "brain_aligned.toml"), "--store", str(fmri_store), "--results",
            str(tmp_path / "r.zarr"), "--set", f"model.checkpoint={tiny_checkpoint}",
            "--no-progress", "--set", setting, "--set", 'variants.brain-aligned.alignment.layer="layer_2"']
    code, _, err = _run(capsys, *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r.zarr" / "runs").exists()


def test_soundnet_scenario_runs_and_refuses_self_supervised_modes(fmri_store, tmp_path, capsys):
    weights = tmp_path / "soundnet.safetensors"
    save_soundnet(build_soundnet(seed=1), weights)  # an untrained stand-in for sound8.pth
    results = tmp_path / "sn.zarr"
    argv = ["run", str(SCENARIOS / "brain_aligned_soundnet.toml"), "--store", str(fmri_store),
            "--results", str(results), "--set", f"model.checkpoint={weights}", "--no-progress",
            *SMALL, "--set", "encoder.components=32", "--set", 'encoder.layers=["conv6", "conv7"]']
    code, _, err = _run(capsys, *argv)
    assert code == 0, err
    runs = {r["variant"]: r for r in read_runs(results)}
    assert sorted(runs) == ["brain-aligned", "brain-continuous", "pretrained", "random"]
    assert runs["pretrained"]["delta_w_layers"] == [f"conv{k}" for k in range(1, 8)]
    assert runs["brain-aligned"]["heldout"]["sse"].shape[0] == 3
    dw = runs["brain-continuous"]["trials"]["delta_w"]
    names = runs["brain-continuous"]["delta_w_layers"]
    assert dw[1:, names.index("conv7")].min() > 0 and dw[:, names.index("conv5")].max() == 0

    code, _, err = _run(capsys, *argv, "--set", "variants.random.mode=continuous", "--force")
    assert code == 2 and "SoundNet lacks" in err and len(err.strip().splitlines()) == 1
    code, _, err = _run(capsys, *argv, "--set", "model.sample_rate=16000", "--force")
    assert code == 2 and "set model.sample_rate = 22050" in err


def test_brain_aligned_refuses_a_recording_of_one_session(tiny_recording, tiny_checkpoint,
                                                          tmp_path, capsys):
    code, _, err = _run(capsys, "run", str(SCENARIOS / "brain_aligned.toml"), "--store",
                        str(tiny_recording), "--results", str(tmp_path / "r.zarr"), "--set",
                        f"model.checkpoint={tiny_checkpoint}", "--set", "data.session=0",
                        "--no-progress")
    assert code == 2
    assert "trains on sessions other than data.session" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r.zarr" / "runs").exists()


def test_a_live_run_refuses_brain_aligned_and_takes_brain_continuous():
    from simulator.live import LiveOptions, live_spec
    from simulator.scenario import ScenarioError, load_scenario

    scenario = load_scenario(SCENARIOS / "brain_aligned.toml")
    with pytest.raises(ScenarioError, match="live, use brain-continuous"):
        live_spec(scenario, "brain-aligned", LiveOptions())
    assert live_spec(scenario, "brain-continuous", LiveOptions()).config["mode"] == "brain-continuous"
