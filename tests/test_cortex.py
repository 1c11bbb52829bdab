"""Tests of the synthetic cortex: HRF, presentation order, and the recordings it writes."""
from dataclasses import asdict, fields

import numpy as np
import pytest

from replay.store import open_recording, validate
from simulator.cortex import CortexSettings, hrf_kernel, presentation_order, synthesize

SUBJECT, SESSION = "sub-01", "0"
# Smaller than the shared fixture: a static/plastic comparison needs three of them.
SMALL = dict(seed=3, sounds=3, duration_s=0.5, subjects=1, voxels=8, repeats=1, retention=0.9,
             snr=4.0, teacher_steps=1, read_layer="layer_2", rank=4, pre_s=1.0, post_s=2.0)


@pytest.mark.parametrize("frame_rate, peak, length", [(1.0, 4, 6), (2.0, 8, 12), (0.5, 2, 3)])
def test_hrf_kernel(frame_rate, peak, length):
    k = hrf_kernel(frame_rate)
    assert k.shape == (length,) and k.dtype == np.float32
    assert int(np.argmax(k)) == peak
    assert float(k.sum()) == pytest.approx(1.0, abs=1e-6)
    assert k[0] == 0.0 and (k >= 0).all()


def test_hrf_kernel_peak_follows_setting():
    assert int(np.argmax(hrf_kernel(1.0, peak_s=2.0, length_s=6.0))) == 2


@pytest.mark.parametrize("n_sounds, repeats", [(6, 2), (10, 3), (5, 1)])
def test_presentation_order(n_sounds, repeats):
    stimulus, repeat = presentation_order(n_sounds, repeats, np.random.default_rng(0))
    assert len(stimulus) == len(repeat) == n_sounds * repeats
    np.testing.assert_array_equal(np.bincount(stimulus, minlength=n_sounds), np.full(n_sounds, repeats))
    for s in range(n_sounds):  # the k-th presentation of a sound in time has repeat index k
        np.testing.assert_array_equal(repeat[stimulus == s], np.arange(repeats))
    again, _ = presentation_order(n_sounds, repeats, np.random.default_rng(0))
    other, _ = presentation_order(n_sounds, repeats, np.random.default_rng(1))
    np.testing.assert_array_equal(stimulus, again)
    assert not np.array_equal(stimulus, other)


def test_synthesized_recording(tiny_recording, tiny_checkpoint):
    assert validate(tiny_recording) is None
    rec = open_recording(tiny_recording)
    stored = rec.attrs["synthetic"]
    settings = CortexSettings(**{f.name: stored[f.name] for f in fields(CortexSettings)})
    assert stored == {**asdict(settings), "checkpoint": str(tiny_checkpoint),
                      "noise_ceiling_r": pytest.approx(np.sqrt(settings.snr / (1 + settings.snr)))}
    assert (settings.sounds, settings.repeats, settings.voxels) == (6, 2, 24)  # the fixture's design

    assert rec.modality == "fus" and rec.n_stimuli == settings.sounds
    assert rec.subjects == [f"sub-{k + 1:02d}" for k in range(settings.subjects)]
    assert all(len(rec.audio(i)) == settings.duration_s * rec.sample_rate for i in range(rec.n_stimuli))
    events = rec.events(SUBJECT, SESSION)
    n_trials = settings.sounds * settings.repeats
    period = settings.pre_s + settings.duration_s + settings.post_s
    np.testing.assert_allclose(events.onset_s, np.arange(n_trials) * period + settings.pre_s)
    np.testing.assert_array_equal(events.duration_s, settings.duration_s)
    np.testing.assert_array_equal(np.bincount(events.stimulus), np.full(settings.sounds, settings.repeats))
    for s in range(settings.sounds):
        np.testing.assert_array_equal(events.repeat[events.stimulus == s], np.arange(settings.repeats))

    Y = rec.responses(SUBJECT, SESSION)[:]
    assert rec.frame_rate(SUBJECT, SESSION) == settings.frame_rate_hz
    assert Y.shape == (int(np.ceil(n_trials * period * settings.frame_rate_hz)), settings.voxels)
    assert Y.dtype == np.float32 and np.isfinite(Y).all()
    # z-scored signal plus noise of variance 1 / snr.
    assert np.mean(Y.var(axis=0)) == pytest.approx(1 + 1 / settings.snr, rel=0.2)
    assert rec.voxel_coords(SUBJECT).shape == (settings.voxels, 3)


def test_cortex_is_reproducible_and_plasticity_changes_it(tmp_path, tiny_checkpoint):
    def responses(name, plasticity):
        path = synthesize(tmp_path / name, tiny_checkpoint, CortexSettings(**SMALL, plasticity=plasticity),
                          log=None)
        return open_recording(path).responses(SUBJECT, SESSION)[:]

    static_a, static_b = responses("a.zarr", 0.0), responses("b.zarr", 0.0)
    slow, fast = responses("slow.zarr", 1e-4), responses("fast.zarr", 3e-3)
    np.testing.assert_array_equal(static_a, static_b)
    np.testing.assert_array_equal(fast, responses("fast_again.zarr", 3e-3))  # the teacher is seeded too
    assert slow.shape == fast.shape == static_a.shape
    assert not np.allclose(slow, static_a, atol=1e-4)
    # Same design and noise draws: a slowly learning teacher stays close to the static one, and a
    # faster one drifts further.
    r_slow = np.corrcoef(slow.ravel(), static_a.ravel())[0, 1]
    r_fast = np.corrcoef(fast.ravel(), static_a.ravel())[0, 1]
    assert 0.95 < r_slow < 1.0 and r_fast < r_slow - 0.1


def test_synthesize_logs_progress(tmp_path, tiny_checkpoint):
    lines = []
    settings = CortexSettings(**SMALL, plasticity=0.0)
    synthesize(tmp_path / "r.zarr", tiny_checkpoint, settings, log=lines.append)
    assert lines and all(line.startswith("synth: subject 1/1 trial ") for line in lines)
    assert lines[-1] == "synth: subject 1/1 trial 3/3"
