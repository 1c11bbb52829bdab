"""Bad recording stores get one clear line and lose nothing: broken metadata, partial and corrupted
chunks, events of missing or unusable sounds, NaN frames (the masking policy), odd audio."""
import json

import numpy as np
import pytest
import zarr

from replay.store import RecordingWriter, StoreError, open_recording, validate
from replay.trials import (MAX_NONFINITE_FRACTION, frame_window, nonfinite_voxels,
                           repeated_responses, replay_session)

N_FRAMES, N_VOXELS, RATE, CHUNK = 50, 7, 2.0, 8  # 7 chunks of responses, the last one partial
SES = "subjects/s1/sessions/0"
EVENTS = dict(onset_s=[1.0, 6.0, 11.0, 16.0], stimulus=[2, 0, 1, 2], duration_s=[4.0, 4.0, 4.0, 4.0],
              repeat=[0, 0, 0, 1])


def write(path, audio=None, responses=None, events=None, sample_rate=10):
    """A sound store: stimuli x, y, z played by the events, and 'spare', silent and played by none."""
    rng = np.random.default_rng(0)
    if audio is None:
        audio = [rng.standard_normal(n).astype(np.float32) for n in (40, 25, 33)] + [np.zeros(30)]
    if responses is None:
        responses = rng.standard_normal((N_FRAMES, N_VOXELS)).astype(np.float32)
    names = ["x", "y", "z", "spare"][:len(audio)] + [f"s{i}" for i in range(4, len(audio))]
    with RecordingWriter(path) as w:
        w.write_stimuli(audio, sample_rate=sample_rate, names=names)
        w.write_voxels("s1", np.zeros((N_VOXELS, 3)))
        w.write_session("s1", 0, responses, RATE, {**EVENTS, **(events or {})}, chunk_frames=CHUNK)
    return path


def refused(path, match):
    """validate() and open_recording() both raise the one-line StoreError ``match`` pins."""
    with pytest.raises(StoreError, match=match) as info:
        validate(path)
    assert "\n" not in str(info.value)
    with pytest.raises(StoreError, match=match):
        open_recording(path)
    return str(info.value)


# --- 1. corrupted or partial stores ------------------------------------------------------------

REWRITE = "rewrite the store with RecordingWriter$"


@pytest.mark.parametrize("node, content, match", [
    (f"{SES}/responses", b"{not json", rf"^rec\.zarr/{SES}/responses: zarr\.json is not valid JSON "
                                       rf"\(Expecting property name .*\); the metadata is corrupted: {REWRITE}"),
    ("stimuli/audio", b"", r"^rec\.zarr/stimuli/audio: zarr\.json is not valid JSON"),
    ("stimuli", b"\x80\x81garbage", r"^rec\.zarr/stimuli: zarr\.json is not valid JSON \('utf-8' codec"),
    ("", b'{"zarr_format": 3, "node_type": "gro', r"^rec\.zarr: zarr\.json is not valid JSON"),
    (f"{SES}/events/onset_s", b"[1, 2]", rf"^rec\.zarr/{SES}/events/onset_s: zarr\.json is not Zarr v3 "
                                          rf"metadata \(node_type None\); {REWRITE}"),
    (f"{SES}/responses", None, rf"^rec\.zarr/{SES}/responses: zarr\.json is missing \(the metadata of "
                               rf"this array or group is lost\); {REWRITE}"),
    # A lost group zarr.json made zarr skip the whole group: the session vanished, validate passed.
    ("subjects/s1/sessions", None, r"^rec\.zarr/subjects/s1/sessions: zarr\.json is missing"),
    ("stimuli/audio", None, r"^rec\.zarr/stimuli/audio: zarr\.json is missing"),
])
def test_broken_metadata(tmp_path, node, content, match):
    meta = write(tmp_path / "rec.zarr") / node / "zarr.json"
    meta.unlink() if content is None else meta.write_bytes(content)
    refused(tmp_path / "rec.zarr", match)


def test_metadata_that_zarr_cannot_read(tmp_path):
    meta = write(tmp_path / "rec.zarr") / SES / "responses" / "zarr.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "shape": "fifty"}))  # JSON, not Zarr
    refused(tmp_path / "rec.zarr", rf"^rec\.zarr/{SES}/responses: unreadable metadata \(.*\); {REWRITE}")


@pytest.mark.parametrize("chunk, match", [
    (f"{SES}/responses/c/3/0", rf"^rec\.zarr/{SES}/responses: 1 of 7 chunks are missing \(an interrupted "
                               rf"write\?\), which would read as zeros; {REWRITE}"),
    ("stimuli/audio/c/1/0", r"^rec\.zarr/stimuli/audio: 1 of 4 chunks are missing"),
])
def test_partial_store(tmp_path, chunk, match):
    (write(tmp_path / "rec.zarr") / chunk).unlink()
    refused(tmp_path / "rec.zarr", match)


def test_chunks_of_zeros_are_written(tmp_path):
    # Zarr skips chunks equal to the fill value by default: a silent sound (here the spare one) or
    # all-zero frames would then look like a partial store.
    write(tmp_path / "rec.zarr", responses=np.zeros((N_FRAMES, N_VOXELS)))
    root = zarr.open_group(tmp_path / "rec.zarr", mode="r")
    for key in ("stimuli/audio", f"{SES}/responses"):
        assert root[key].nchunks_initialized == root[key].nchunks, key
    validate(tmp_path / "rec.zarr")


@pytest.mark.parametrize("chunk, damage, match", [
    (f"{SES}/responses/c/3/0", "truncate", rf"^rec\.zarr/{SES}/responses: the chunk of frames 24-31 does not "
                                           r"decode \(.*\); the store is corrupted: rewrite it with RecordingWriter$"),
    (f"{SES}/responses/c/6/0", "garbage", rf"^rec\.zarr/{SES}/responses: the chunk of frames 48-49 does not decode"),
    ("stimuli/audio/c/1/0", "garbage", r"^rec\.zarr/stimuli/audio: the chunk of stimulus 1 does not decode"),
    # Every sound is read once, also one that no event plays.
    ("stimuli/audio/c/3/0", "truncate", r"^rec\.zarr/stimuli/audio: the chunk of stimulus 3 does not decode"),
    (f"{SES}/events/onset_s/c/0", "garbage", rf"^rec\.zarr/{SES}/events/onset_s: its chunk does not decode"),
    ("stimuli/lengths/c/0", "truncate", r"^rec\.zarr/stimuli/lengths: its chunk does not decode"),
])
def test_corrupted_chunk(tmp_path, chunk, damage, match):
    path = write(tmp_path / "rec.zarr") / chunk
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2] if damage == "truncate" else b"\x00garbage" * 9)
    refused(tmp_path / "rec.zarr", match)


def test_untouched_store_is_sound(tmp_path):
    # The damage, not the store the tests start from, makes the checks above fail.
    write(tmp_path / "rec.zarr")
    validate(tmp_path / "rec.zarr")


# --- 2. events of missing stimuli ---------------------------------------------------------------

def test_events_of_missing_stimuli(tmp_path):
    write(tmp_path / "rec.zarr", events=dict(stimulus=[2, 0, 7, 9]))
    refused(tmp_path / "rec.zarr", rf"^rec\.zarr/{SES}/events/stimulus: event 2 points to stimulus 7, but the "
                                   r"store has 4 stimuli \(indices 0-3\), and 2 event\(s\) point past them; "
                                   r"write the missing stimuli or drop those events$")


# --- 3. non-finite frames -----------------------------------------------------------------------

def frames_with(nonfinite):
    """Random frames with NaN (or inf) at the (frames, voxel) pairs given."""
    Y = np.random.default_rng(1).standard_normal((N_FRAMES, N_VOXELS)).astype(np.float32)
    for frames, voxel, value in nonfinite:
        Y[frames, voxel] = value
    return Y


def test_policy_constant():
    assert MAX_NONFINITE_FRACTION == 0.1


def test_masking_threshold(tmp_path):
    # 10% of 50 frames is 5: a voxel with 5 non-finite frames stays, one with 6 is masked.
    Y = frames_with([(np.arange(5), 1, np.nan), (np.arange(10, 16), 2, np.inf), (np.arange(30), 4, np.nan)])
    rec = open_recording(write(tmp_path / "rec.zarr", responses=Y))  # validates: accepted
    mask, counts = nonfinite_voxels(rec, "s1", "0")
    assert mask.dtype == bool and counts.dtype == np.int64
    assert mask.tolist() == [False, False, True, False, True, False, False]
    assert counts.tolist() == [0, 5, 6, 0, 30, 0, 0]
    mask, _ = nonfinite_voxels(rec, "s1", "0", max_fraction=0.0)  # any non-finite frame masks
    assert mask.tolist() == [False, True, True, False, True, False, False]
    with pytest.raises(ValueError, match=r"'max_fraction' parameter\. Allowed values are numbers in "
                                         r"\[0, 1\), but got 1\.5 instead\.$"):
        nonfinite_voxels(rec, "s1", "0", max_fraction=1.5)


def replay_session_frames(rec, **kwargs):
    return np.concatenate([t.frames for t in replay_session(rec, "s1", "0", tail_s=2.0, **kwargs)])


def test_replay_masks_voxels_and_keeps_other_nan(tmp_path):
    Y = frames_with([([3, 20], 1, np.nan), (np.arange(0, 50, 2), 5, np.nan), ([12], 6, -np.inf)])
    rec = open_recording(write(tmp_path / "rec.zarr", responses=Y))
    stored = rec.responses("s1", "0")[:]
    mask = np.arange(N_VOXELS) == 5
    for t in replay_session(rec, "s1", "0", tail_s=2.0):
        w = frame_window(t.onset_s, t.duration_s, 2.0, RATE, N_FRAMES)
        assert t.frames.dtype == np.float32
        np.testing.assert_array_equal(t.frames[:, 5], 0.0)
        # Everything else as recorded, NaN and inf included (assert_array_equal matches NaN).
        np.testing.assert_array_equal(t.frames[:, ~mask], Y[w][:, ~mask])
    frames = replay_session_frames(rec)  # frame 3's NaN and frame 12's -inf survive
    assert np.isnan(frames).any() and np.isneginf(frames).any()
    np.testing.assert_array_equal(rec.responses("s1", "0")[:], stored)  # nothing stored changed
    np.testing.assert_array_equal(stored, Y)


def test_explicit_mask_skips_the_scan(tmp_path, monkeypatch):
    import replay.trials

    rec = open_recording(write(tmp_path / "rec.zarr"))

    def no_scan(*args):
        raise AssertionError("the session was scanned although a mask was given")

    monkeypatch.setattr(replay.trials, "_scan_nonfinite", no_scan)
    mask = np.zeros(N_VOXELS, bool)
    mask[[0, 3]] = True
    frames = replay_session_frames(rec, masked_voxels=mask)
    np.testing.assert_array_equal(frames[:, mask], 0.0)
    assert (frames[:, ~mask] != 0).all()
    np.testing.assert_array_equal(replay_session_frames(rec, masked_voxels=np.zeros(N_VOXELS, bool)),
                                  np.concatenate([rec.responses("s1", "0")[frame_window(
                                      o, d, 2.0, RATE, N_FRAMES)] for o, d in
                                      zip(EVENTS["onset_s"], EVENTS["duration_s"])]))
    for bad, got in [(np.zeros(N_VOXELS - 1, bool), r"dtype bool and shape \(6,\)"),
                     (np.zeros(N_VOXELS), r"dtype float64 and shape \(7,\)")]:
        with pytest.raises(ValueError, match=r"'masked_voxels' parameter\. Allowed values are boolean arrays "
                                             rf"of shape \(7,\), but got an array of {got} instead\.$"):
            replay_session_frames(rec, masked_voxels=bad)


def test_masked_voxels_explain_most_frames(tmp_path):
    # Voxel 0 is NaN in every frame, so every frame holds a NaN: the session stays usable, as the
    # mask removes them all.
    rec = open_recording(write(tmp_path / "rec.zarr", responses=frames_with([(slice(None), 0, np.nan)])))
    assert np.isfinite(replay_session_frames(rec)).all()


def test_every_voxel_masked_is_refused(tmp_path):
    Y = frames_with([(np.arange(8) + 6 * v, v, np.nan) for v in range(N_VOXELS)])  # 8 of 50 each
    path = write(tmp_path / "rec.zarr", responses=Y)
    match = (rf"^rec\.zarr/{SES}/responses: every voxel is non-finite \(NaN or inf\) in more than 10% of the "
             r"50 frames, so every voxel would be masked; clean the responses or drop this session$")
    refused(path, match)
    rec = open_recording(path, validate=False)
    for call in (lambda: nonfinite_voxels(rec, "s1", "0"), lambda: replay_session_frames(rec),
                 lambda: repeated_responses(rec, "s1", "0")):
        with pytest.raises(StoreError, match=match):
            call()


def test_most_frames_non_finite_is_refused(tmp_path):
    # 4 frames (8%) per voxel, each voxel on other frames: none masked, 28 of 50 frames unusable.
    Y = frames_with([(np.arange(4) + 4 * v, v, np.inf if v % 2 else np.nan) for v in range(N_VOXELS)])
    path = write(tmp_path / "rec.zarr", responses=Y)
    refused(path, rf"^rec\.zarr/{SES}/responses: 28 of 50 frames hold a non-finite value \(NaN or inf\) "
                  r"outside the masked voxels, more than half; clean the responses or drop this session$")
    # Half of the frames exactly is still accepted.
    validate(write(tmp_path / "ok.zarr", responses=frames_with([(np.arange(4) + 4 * v, v, np.nan)
                                                               for v in range(6)] + [([24], 6, np.nan)])))


def test_repeated_responses_tolerate_nan(tmp_path):
    Y = frames_with([(np.arange(40), 2, np.nan), ([3, 23], 4, np.nan)])
    rec = open_recording(write(tmp_path / "rec.zarr", responses=Y))
    responses, stimuli = repeated_responses(rec, "s1", "0", tail_s=2.0)
    assert stimuli.tolist() == [2] and responses.shape == (1, 2, 12, N_VOXELS)
    np.testing.assert_array_equal(responses[..., 2], 0.0)  # masked, as in the trials
    expected = [Y[frame_window(o, d, 2.0, RATE, N_FRAMES)] for o, d, s in
                zip(EVENTS["onset_s"], EVENTS["duration_s"], EVENTS["stimulus"]) if s == 2]
    keep = np.arange(N_VOXELS) != 2
    np.testing.assert_array_equal(responses[0][..., keep], np.stack(expected)[..., keep])
    assert np.isnan(responses).sum() == 1  # frame 3 (onset 1 s at 2 Hz: frames 2-13) stays NaN
    np.testing.assert_array_equal(repeated_responses(rec, "s1", "0", tail_s=2.0,
                                                     masked_voxels=np.zeros(N_VOXELS, bool))[0][0],
                                  np.stack(expected))


# --- 4. audio -----------------------------------------------------------------------------------

def test_store_rate_resampled_to_model_rate(tmp_path):
    sr = 22050
    tone = np.sin(2 * np.pi * 440 * np.arange(sr) / sr).astype(np.float32)
    write(tmp_path / "rec.zarr", audio=[tone[:1000], tone[: sr // 2], tone], sample_rate=sr)
    rec = open_recording(tmp_path / "rec.zarr")
    trials = {t.stimulus: t for t in replay_session(rec, "s1", "0", sample_rate=16000)}
    assert {s: (t.sample_rate, len(t.waveform), t.waveform.dtype) for s, t in trials.items()} == {
        0: (16000, 726, np.float32),  # ceil(1000 * 16000 / 22050)
        1: (16000, 8000, np.float32), 2: (16000, 16000, np.float32)}
    expected = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    np.testing.assert_allclose(trials[2].waveform[200:-200], expected[200:-200], atol=1e-2)


def test_multichannel_audio_is_downmixed(tmp_path):
    rng = np.random.default_rng(2)
    stereo, five = rng.standard_normal((100, 2)), rng.standard_normal((60, 5))
    mono = rng.standard_normal(50)
    write(tmp_path / "rec.zarr", audio=[stereo, mono, five, np.zeros(30)])
    rec = open_recording(tmp_path / "rec.zarr")
    np.testing.assert_allclose(rec.audio(0), stereo.mean(axis=1), atol=1e-6)
    np.testing.assert_allclose(rec.audio(1), mono, atol=1e-6)
    np.testing.assert_allclose(rec.audio(2), five.mean(axis=1), atol=1e-6)
    # A 3-D array holds stereo stimuli (n_stimuli, n_samples, n_channels).
    block = rng.standard_normal((4, 40, 2))
    write(tmp_path / "block.zarr", audio=block)
    np.testing.assert_allclose(open_recording(tmp_path / "block.zarr").audio(3), block[3].mean(axis=1), atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 100), (100, 9), (3, 3), (10, 2, 2), ()])
def test_other_shapes_of_audio_refused(tmp_path, shape):
    audio = [np.ones(40), np.ones(shape), np.ones(33)]
    with pytest.raises(StoreError, match=rf"^rec\.zarr/stimuli/audio: stimulus 1 has shape "
                                         rf"{re_shape(shape)}; pass \(n_samples,\) or \(n_samples, "
                                         r"n_channels <= 8\) to downmix to mono$"):
        write(tmp_path / "rec.zarr", audio=audio)


def re_shape(shape):
    return str(shape).replace("(", r"\(").replace(")", r"\)")


@pytest.mark.parametrize("wave, problem", [
    (np.zeros(0), r"is empty \(0 samples\)"),
    (np.zeros(25), r"is silent \(every sample is 0\)"),
    (np.where(np.arange(25) == 7, np.nan, 1.0), r"holds non-finite samples \(NaN or inf\)"),
    (np.where(np.arange(25) == 0, -np.inf, 0.0), r"holds non-finite samples \(NaN or inf\)"),
])
def test_unusable_audio_of_a_played_stimulus(tmp_path, wave, problem):
    audio = [np.ones(40), wave, np.ones(33), np.zeros(0)]
    write(tmp_path / "rec.zarr", audio=audio)
    refused(tmp_path / "rec.zarr", rf"^rec\.zarr/stimuli/audio: stimulus 1 \('y'\) {problem}, but event 2 of "
                                   rf"{SES} plays it; give it audio or remove its events$")


@pytest.mark.parametrize("spare", [np.zeros(0), np.zeros(10), np.full(10, np.nan)])
def test_unplayed_stimulus_may_be_empty(tmp_path, spare):
    write(tmp_path / "rec.zarr", audio=[np.ones(40), np.ones(25), np.ones(33), spare])
    assert len(open_recording(tmp_path / "rec.zarr").audio(3)) == len(spare)


def test_every_sound_empty_and_unplayed(tmp_path):
    # No samples at all (a zero-width audio array): nothing to decode, nothing played.
    with RecordingWriter(tmp_path / "rec.zarr") as w:
        w.write_stimuli([np.zeros(0), np.zeros(0)], sample_rate=8)
    validate(tmp_path / "rec.zarr")


def test_cli_prints_one_line(tmp_path, capsys):
    from simulator.cli import main

    (write(tmp_path / "rec.zarr") / f"{SES}/responses/c/2/0").write_bytes(b"junk")
    assert main(["inspect", str(tmp_path / "rec.zarr")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"cortexreplay inspect: error: rec.zarr/{SES}/responses: "
                                                   "the chunk of frames 16-23 does not decode")
