"""Live trial assembly: a stored session streamed frame by frame (and perturbed) into trials."""
import numpy as np
import pytest

from replay.assembly import TrialAssembler
from replay.store import RecordingWriter, open_recording
from replay.trials import RunningVoxelMask, replay_session

RATE, N_VOXELS, TAIL = 1.0, 6, 3.0


@pytest.fixture(scope="module")
def live_store(tmp_path_factory):
    """8 sounds of 2-4 s, one every 9 s, frames at 1 Hz: windows of sound + 3 s tail."""
    rng = np.random.default_rng(0)
    onsets = 2.0 + 9.0 * np.arange(8)
    durations = rng.choice([2.0, 3.0, 4.0], 8)
    n_frames = int(onsets[-1] + durations[-1] + TAIL) + 1
    path = tmp_path_factory.mktemp("live") / "rec.zarr"
    with RecordingWriter(path) as w:
        w.write_stimuli([rng.standard_normal(int(8000 * d)) for d in durations], sample_rate=8000)
        w.write_voxels("s1", np.zeros((N_VOXELS, 3)))
        w.write_session("s1", 0, rng.standard_normal((n_frames, N_VOXELS)), RATE,
                        dict(onset_s=onsets, stimulus=np.arange(8), duration_s=durations,
                             repeat=np.zeros(8)))
    return path


@pytest.fixture(scope="module")
def recording(live_store):
    return open_recording(live_store)


def _stream(recording, rng=None, drop=0.0, duplicate=0.0, shuffle=0, jitter=0.0, t0=1000.0):
    """The session as an acquisition sends it: (kind, payload) messages, events at their onsets.
    Returns the messages and the frame indices dropped."""
    Y = recording.responses("s1", 0)[...]
    ev = recording.events("s1", 0)
    order = np.arange(len(Y))
    if shuffle:  # each frame moves at most `shuffle` places
        keys = order + rng.uniform(0, shuffle, len(order))
        order = order[np.argsort(keys, kind="stable")]
    dropped = set(np.flatnonzero(rng.random(len(Y)) < drop).tolist()) if drop else set()
    messages = []
    for k in order:
        if k in dropped:
            continue
        ts = t0 + k / RATE + (rng.uniform(-jitter, jitter) if jitter else 0.0)
        copies = 2 if duplicate and rng.random() < duplicate else 1
        messages += [("frame", (Y[k:k + 1], [ts]))] * copies
        for e in np.flatnonzero(np.floor(ev.onset_s * RATE) == k):  # the event when its sound starts
            messages.append(("event", (float(ev.onset_s[e]), float(ev.duration_s[e]),
                                       int(ev.stimulus[e]))))
    return messages, dropped


def _assemble(messages, **options):
    asm = TrialAssembler(RATE, N_VOXELS, TAIL, t0=1000.0, **options)
    trials = []
    for kind, payload in messages:
        trials += asm.add_frames(*payload) if kind == "frame" else asm.add_event(*payload)
    return trials + asm.flush(), asm.counts


def test_an_unperturbed_stream_gives_the_stored_replays_trials(recording):
    stored = list(replay_session(recording, "s1", 0, tail_s=TAIL, sample_rate=8000))
    live, counts = _assemble(_stream(recording)[0])
    assert [t.stimulus for t in live] == [t.stimulus for t in stored]
    for a, b in zip(live, stored):
        np.testing.assert_array_equal(a.frames, b.frames)
        assert a.offset_s == b.offset_s and a.missing == 0
    assert counts.as_dict() == {"frames": counts.frames, "jittered": 0, "duplicates": 0,
                                "out_of_order": 0, "late": 0, "missing": 0, "events": 8,
                                "trials": 8}


def test_drops_duplicates_reordering_and_jitter_are_handled_and_counted(recording):
    rng = np.random.default_rng(1)
    stored = list(replay_session(recording, "s1", 0, tail_s=TAIL, sample_rate=8000))
    messages, dropped = _stream(recording, rng, drop=0.05, duplicate=0.05, shuffle=2, jitter=0.2)
    live, counts = _assemble(messages, reorder_frames=2)
    n_dup = sum(1 for a, b in zip(messages, messages[1:]) if a is b)
    assert counts.duplicates == n_dup > 0 and counts.out_of_order > 0 and counts.jittered == 0
    assert counts.late == 0 and counts.trials == 8
    lost = 0
    for a, b in zip(live, stored):  # every frame that came is where it belongs; the rest NaN
        rows = np.arange(a.first_frame, a.first_frame + len(a.frames))
        gone = np.isin(rows, list(dropped))
        np.testing.assert_array_equal(a.frames[~gone], b.frames[~gone])
        assert np.isnan(a.frames[gone]).all() and a.missing == gone.sum()
        lost += gone.sum()
    assert counts.missing == lost > 0


def test_a_frame_far_off_the_grid_is_counted_as_jittered(recording):
    asm = TrialAssembler(RATE, N_VOXELS, TAIL, t0=0.0, max_jitter=0.25)
    asm.add_frames(np.zeros((3, N_VOXELS)), [0.0, 1.1, 2.4])
    assert asm.counts.jittered == 1  # 2.4 is filed as frame 2, 0.4 of a period off


def test_a_frame_after_its_trial_was_released_is_late_and_dropped():
    asm = TrialAssembler(RATE, 1, tail_s=0.0, t0=0.0, reorder_frames=1)
    asm.add_event(0.0, 2.0, stimulus=0)  # frames 0 and 1
    released = asm.add_frames(np.ones((1, 1)), [1.0])  # frame 0 may still come: wait one frame
    assert released == [] and asm.add_frames(np.ones((1, 1)), [2.0])[0].missing == 1
    assert asm.add_frames(np.ones((1, 1)), [0.0]) == [] and asm.counts.late == 1


def test_an_event_after_its_frames_still_gets_them_from_the_history():
    asm = TrialAssembler(RATE, 1, tail_s=0.0, t0=0.0, history_frames=5)
    asm.add_frames(np.arange(10, dtype=np.float32)[:, None], np.arange(10.0))
    (trial,) = asm.add_event(6.0, 2.0, stimulus=1)  # frames 6, 7: kept, released at once
    assert trial.frames[:, 0].tolist() == [6.0, 7.0]
    (old,) = asm.add_event(1.0, 2.0, stimulus=2)  # frames 1, 2: forgotten (history of 5)
    assert np.isnan(old.frames).all() and old.missing == 2 and asm.counts.missing == 2


def test_trials_are_released_in_the_order_the_sounds_were_played():
    asm = TrialAssembler(RATE, 1, tail_s=0.0, t0=0.0, reorder_frames=0)
    asm.add_event(0.0, 6.0, stimulus=0)  # frames 0-5
    asm.add_event(1.0, 1.0, stimulus=1)  # frame 1: complete first, but played second
    assert asm.add_frames(np.ones((3, 1)), [0.0, 1.0, 2.0]) == []
    released = asm.add_frames(np.ones((3, 1)), [3.0, 4.0, 5.0])
    assert [t.stimulus for t in released] == [0, 1] and asm.counts.missing == 0


def test_flush_releases_what_is_pending_cut_at_the_last_frame():
    asm = TrialAssembler(RATE, 1, tail_s=5.0, t0=0.0)
    asm.add_event(0.0, 2.0, stimulus=0)
    asm.add_frames(np.ones((3, 1)), [0.0, 1.0, 2.0])
    (trial,) = asm.flush()
    assert trial.frames.shape == (3, 1) and trial.missing == 0


@pytest.mark.parametrize("kwargs, message", [
    (dict(frame_rate=0.0), "'frame_rate' parameter. Allowed values are numbers > 0"),
    (dict(reorder_frames=-1), "'reorder_frames' parameter. Allowed values are integers >= 0"),
    (dict(max_jitter=0.7), r"'max_jitter' parameter. Allowed values are numbers in \(0, 0.5\]"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrialAssembler(**{"frame_rate": 1.0, "n_voxels": 2, "tail_s": 1.0, **kwargs})


def test_bad_frames_and_events_are_refused_and_change_nothing():
    asm = TrialAssembler(RATE, 2, tail_s=1.0, t0=0.0)
    with pytest.raises(ValueError, match=r"arrays \(n_frames, 2\) with one timestamp per frame"):
        asm.add_frames(np.zeros((2, 3)), [0.0, 1.0])
    with pytest.raises(ValueError, match="'timestamps' parameter. Allowed values are finite"):
        asm.add_frames(np.zeros((1, 2)), [np.nan])
    with pytest.raises(ValueError, match="an onset >= 0 and a duration >= 0"):
        asm.add_event(-1.0, 2.0, 0)
    assert asm.counts.frames == 0 and asm.counts.events == 0


def test_a_running_mask_takes_a_voxel_that_keeps_failing_not_lost_frames():
    masker = RunningVoxelMask(3, min_frames=10)
    frames = np.ones((30, 3), np.float32)
    frames[::4] = np.nan          # a quarter of the frames lost whole: the acquisition's loss
    frames[1::8, 1] = np.nan      # voxel 1 fails in 4 of the 22 frames that came (18%)
    frames[2, 2] = np.inf         # voxel 2 once (5%)
    out = masker.apply(frames[:8])  # 6 frames came: too few to judge
    assert not masker.mask.any() and np.isnan(out[1, 1])
    out = masker.apply(frames[8:])
    assert masker.mask.tolist() == [False, True, False] and (out[:, 1] == 0).all()
    assert masker.frames == 22 and np.isnan(out[0, [0, 2]]).all()  # a lost frame stays lost
