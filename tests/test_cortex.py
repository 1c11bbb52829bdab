"""Tests of the synthetic cortex: HRF, presentation order, and the recordings it writes (fUS and
fMRI)."""
import argparse
from dataclasses import asdict, fields

import numpy as np
import pytest

from encoders.encoding import PrequentialEncoder
from encoders.hrf import glover_kernel
from replay.store import open_recording, validate
from replay.trials import replay_session
from simulator.cli import synth as synth_cli
from simulator.cortex import (CortexSettings, hrf_kernel, presentation_order, response_kernel,
                              session_sounds, synthesize, unit_labels)
from simulator.learner import Learner
from simulator.pretrain import load_checkpoint
from simulator.trial_loop import align

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


# -- the fMRI variant ---------------------------------------------------------------------------

FMRI = dict(seed=0, sounds=8, duration_s=2.0, subjects=1, voxels=8, repeats=2, sessions=2,
            plasticity=0.0, snr=4.0, rank=4, teacher_steps=1)


@pytest.fixture(scope="module")
def fmri_recording(tmp_path_factory, tiny_checkpoint):
    """8 two-second sounds in 2 sessions of 4, each heard twice; 8 parcels, a static teacher."""
    out = tmp_path_factory.mktemp("fmri") / "fmri.zarr"
    return synthesize(out, tiny_checkpoint, CortexSettings.fmri(**FMRI), log=None)


def test_fmri_recording_has_sessions_of_their_own_sounds_at_the_tr(fmri_recording):
    assert validate(fmri_recording) is None
    rec = open_recording(fmri_recording)
    settings = CortexSettings.fmri(**FMRI)
    assert rec.modality == "fmri" and rec.attrs["synthetic"]["hrf"] == "glover"
    assert rec.sessions(SUBJECT) == ["0", "1"]
    assert rec.regions(SUBJECT).tolist() == [f"parcel-00{i}" for i in range(1, 9)]
    period = settings.pre_s + settings.duration_s + settings.post_s
    heard = []
    for session in rec.sessions(SUBJECT):
        assert rec.frame_rate(SUBJECT, session) == pytest.approx(1 / 1.49, rel=1e-12)
        events = rec.events(SUBJECT, session)
        sounds = np.unique(events.stimulus)
        assert len(sounds) == 4 and len(events) == 4 * settings.repeats
        for s in sounds:  # each sound `repeats` times within its session
            np.testing.assert_array_equal(events.repeat[events.stimulus == s], np.arange(2))
        np.testing.assert_allclose(events.onset_s, np.arange(len(events)) * period + settings.pre_s)
        Y = rec.responses(SUBJECT, session)[:]
        assert Y.shape == (int(np.ceil(len(events) * period / 1.49)), 8)
        assert np.isfinite(Y).all() and np.mean(Y.var(axis=0)) == pytest.approx(1.25, rel=0.2)
        heard.append(set(sounds.tolist()))
    assert heard[0].isdisjoint(heard[1]) and heard[0] | heard[1] == set(range(8))


@pytest.mark.parametrize("tail_s, n_frames", [(14.0, 11), (6.0, 6)])
def test_fmri_recording_replays_in_tr_frames(fmri_recording, tail_s, n_frames):
    rec = open_recording(fmri_recording)
    trials = list(replay_session(rec, SUBJECT, "1", tail_s=tail_s))
    assert len(trials) == 8 and {t.stimulus for t in trials} <= set(range(4, 8))
    # ceil((2 s of sound + the tail) / 1.49 s) frames each.
    assert all(t.frames.shape == (n_frames, 8) and t.frame_rate == 1 / 1.49 for t in trials)
    assert all(0 <= t.offset_s < 1.49 for t in trials)


def test_a_glover_encoder_finds_the_static_fmri_teacher(fmri_recording, tiny_checkpoint):
    """The frozen network is the static teacher: with the canonical HRF the encoder recovers it;
    the features at lag 0 alone, without the hemodynamics, cannot."""
    rec = open_recording(fmri_recording)
    learner = Learner(load_checkpoint(tiny_checkpoint)[0], "frozen")
    trials = [t for session in rec.sessions(SUBJECT)
              for t in replay_session(rec, SUBJECT, session, tail_s=14.0)]
    features = [align(learner.features(t.waveform, t.sample_rate, t.frame_rate,
                                       t.offset_s)["layer_3"], len(t.frames)) for t in trials]
    r = {}
    for hrf in ("glover", "fir"):
        enc = PrequentialEncoder(["l"], 8, len(trials), lags=[0], alphas=[1, 10, 100, 1e3, 1e4],
                                 warmup=4, hrf=hrf, frame_rate_hz=rec.frame_rate(SUBJECT, "0"))
        for i, (t, X) in enumerate(zip(trials, features)):
            enc.step(i, i, {"l": X}, t.frames)
        r[hrf] = float(enc.r()["l"].mean())
    assert r["glover"] > 0.15 and r["glover"] > r["fir"] + 0.25, r  # 0.23 and -0.18 when written


def test_fmri_settings_and_their_checks(tmp_path, tiny_checkpoint):
    s = CortexSettings.fmri()
    assert (s.modality, s.hrf, s.sessions, s.frame_rate_hz) == ("fmri", "glover", 4, 1 / 1.49)
    np.testing.assert_array_equal(response_kernel(s), glover_kernel(1 / 1.49))
    np.testing.assert_array_equal(response_kernel(CortexSettings()), hrf_kernel(1.0))
    assert unit_labels(CortexSettings(voxels=2)) == ["synthetic", "synthetic"]
    assert unit_labels(CortexSettings.fmri(voxels=1000))[-1] == "parcel-1000"
    for changes, match in (({"sessions": 9}, r"'sessions' parameter.*from 1 to the number of "
                                             r"sounds \(8\).*but got 9"),
                           ({"modality": "meg"}, r"'modality' parameter.*'fus' and 'fmri'"),
                           ({"hrf": "spm"}, r"'hrf' parameter.*'gamma' and 'glover'")):
        with pytest.raises(ValueError, match=match):
            synthesize(tmp_path / "x.zarr", tiny_checkpoint,
                       CortexSettings.fmri(**{**FMRI, **changes}), log=None)
    assert not list(tmp_path.iterdir())


def _synth_args(*argv):
    parser = argparse.ArgumentParser()
    synth_cli.add_parser(parser.add_subparsers())
    return parser.parse_args(["synth", "--out", "x", "--checkpoint", "c", *argv])


def test_synth_options_choose_the_modalitys_design():
    assert synth_cli.settings_from(_synth_args()) == CortexSettings()  # the fUS default, as before
    assert synth_cli.settings_from(_synth_args("--modality", "fmri")) == CortexSettings.fmri()
    got = synth_cli.settings_from(_synth_args("--modality", "fmri", "--sessions", "2", "--tr",
                                              "2.0", "--voxels", "50", "--duration", "3"))
    assert got == CortexSettings.fmri(sessions=2, frame_rate_hz=0.5, voxels=50, duration_s=3.0)
    assert synth_cli.settings_from(_synth_args("--tr", "0.5")) == CortexSettings(frame_rate_hz=2.0)


@pytest.mark.parametrize("n_sounds, sessions", [(8, 1), (8, 4), (7, 3), (5, 5)])
def test_session_sounds_are_disjoint_blocks_covering_every_sound(n_sounds, sessions):
    blocks = session_sounds(n_sounds, sessions)
    assert len(blocks) == sessions and all(len(b) > 0 for b in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks), np.arange(n_sounds))
    assert max(map(len, blocks)) - min(map(len, blocks)) <= 1
