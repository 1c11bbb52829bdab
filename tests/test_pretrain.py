"""Tests of pretraining: reuse of a checkpoint, what load_checkpoint brings, corpora from audio folders."""
import json
from dataclasses import asdict

import numpy as np
import pytest
import soundfile

from simulator.model import build_model
from simulator.pretrain import (PretrainSettings, _temperature, load_checkpoint, load_corpus,
                                pretrain)

TINY = dict(size="tiny", steps=2, warmup_steps=1, corpus_sounds=2, clip_s=0.25)


def test_pretrain_reuses_same_settings(tmp_path):
    settings = PretrainSettings(**TINY)
    first, second = [], []
    out = pretrain(tmp_path / "ck", settings, log=first.append)
    assert out == tmp_path / "ck"
    files = ("model.safetensors", "optimizer.pt", "pretrain.json")
    mtimes = {f: (out / f).stat().st_mtime_ns for f in files}
    assert not any("reusing" in line for line in first)
    assert pretrain(out, settings, log=second.append) == out
    assert len(second) == 1 and second[0].startswith("pretrain: reusing the checkpoint")
    assert {f: (out / f).stat().st_mtime_ns for f in files} == mtimes
    # Other settings retrain in place.
    other = PretrainSettings(**{**TINY, "seed": 1})
    third = []
    pretrain(out, other, log=third.append)
    assert not any("reusing" in line for line in third)
    assert json.loads((out / "pretrain.json").read_text())["settings"] == asdict(other)


def test_load_checkpoint_brings_optimizer_and_temperature(tiny_checkpoint):
    model, state, meta = load_checkpoint(tiny_checkpoint)
    settings = PretrainSettings(**meta["settings"])
    assert set(state) == {"state", "param_groups"}
    assert len(state["state"]) == len(list(model.parameters()))
    assert {float(s["step"]) for s in state["state"].values()} == {float(settings.steps)}
    # The temperature decays geometrically from max to min over the steps; a fresh model has max.
    assert meta["gumbel_temperature"] == pytest.approx(settings.min_temperature)
    assert model.quantizer.temperature == pytest.approx(settings.min_temperature)
    assert build_model(settings.size).quantizer.temperature == settings.max_temperature
    assert np.isfinite(meta["final_loss"])


def test_load_checkpoint_of_plain_model(tmp_path):
    build_model("tiny", seed=1).save_pretrained(tmp_path)
    model, state, meta = load_checkpoint(tmp_path)
    assert state is None and meta == {}
    assert model.config.hidden_size == 128


def test_temperature_schedule():
    settings = PretrainSettings(steps=5, max_temperature=2.0, min_temperature=0.5)
    temps = [_temperature(settings, k) for k in range(5)]
    np.testing.assert_allclose(temps, 2.0 * 0.25 ** (np.arange(5) / 4))


def test_synthetic_corpus_shape_and_seed():
    clips = load_corpus(PretrainSettings(corpus_sounds=3, clip_s=0.25))
    assert clips.shape == (3, 4000) and clips.dtype == np.float32
    again = load_corpus(PretrainSettings(corpus_sounds=3, clip_s=0.25))
    other = load_corpus(PretrainSettings(corpus_sounds=3, clip_s=0.25, seed=1))
    np.testing.assert_array_equal(clips, again)
    assert not np.array_equal(clips, other)


def write_tone(path, freq, seconds, rate=22050, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    tone = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    soundfile.write(path, np.stack([tone] * channels, axis=1) if channels > 1 else tone, rate)


def test_corpus_from_audio_folder(tmp_path):
    folder = tmp_path / "audio"
    (folder / "nested").mkdir(parents=True)
    write_tone(folder / "a.wav", 440.0, 1.0)
    write_tone(folder / "nested" / "b.WAV", 1000.0, 0.8, channels=2)
    (folder / "notes.txt").write_text("not audio")
    settings = PretrainSettings(**{**TINY, "corpus": str(folder), "clip_s": 0.25})
    clips = load_corpus(settings)
    # 1.0 s and 0.8 s at 16 kHz give 4 + 3 whole clips of 4000 samples, files in sorted order.
    assert clips.shape == (7, 4000) and clips.dtype == np.float32
    freqs = np.fft.rfftfreq(4000, 1 / 16000)
    peaks = [freqs[np.abs(np.fft.rfft(c)).argmax()] for c in clips]
    assert peaks == [440.0] * 4 + [1000.0] * 3
    assert np.abs(clips[-1]).max() == pytest.approx(0.5, abs=0.02)  # stereo averaged, not summed
    out = pretrain(tmp_path / "ck", settings, log=None)
    assert (out / "model.safetensors").exists()
    assert json.loads((out / "pretrain.json").read_text())["settings"]["corpus"] == str(folder)


def test_empty_corpus_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("no audio")
    settings = PretrainSettings(**{**TINY, "corpus": str(tmp_path)})
    with pytest.raises(ValueError, match=r"corpus folder '.*' holds no audio files \(\.wav, \.flac"):
        load_corpus(settings)
    with pytest.raises(ValueError, match="holds no audio files"):
        pretrain(tmp_path / "ck", settings, log=None)
    assert not (tmp_path / "ck" / "pretrain.json").exists()


def test_corpus_files_shorter_than_a_clip(tmp_path):
    write_tone(tmp_path / "short.wav", 440.0, 0.1)
    with pytest.raises(ValueError, match=r"no audio file in '.*' is longer than one clip of 4000 samples"):
        load_corpus(PretrainSettings(**{**TINY, "corpus": str(tmp_path)}))
