"""scenarios/brain_aligned.toml (and its SoundNet twin) through the CLI on a real synthetic fMRI
recording of several sessions: a real encoder process, real networks, a real results store."""
import json
from pathlib import Path

import numpy as np
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
    # Frozen and brain-aligned replays do not learn; the encoder saw the glover design.
    assert runs["brain-aligned"]["config"]["encoder"]["hrf"] == "glover"
    assert np.all(runs["pretrained"]["trials"]["delta_w"] == 0)


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
