"""Tests of the replay engine: event orders, the pacer (fake clock), and trials from a recording."""
import math

import numpy as np
import pytest

import replay.trials
from replay.clock import Pacer
from replay.ordering import ORDERS, check_order, event_order
from replay.store import open_recording
from replay.trials import frame_window, replay_session, resample

SUBJECT, SESSION = "sub-01", "0"


# --- ordering ----------------------------------------------------------------------------------

def test_event_orders():
    np.testing.assert_array_equal(event_order(5), np.arange(5))
    np.testing.assert_array_equal(event_order(5, "reversed"), [4, 3, 2, 1, 0])
    shuffled = event_order(20, "shuffled", seed=3)
    np.testing.assert_array_equal(np.sort(shuffled), np.arange(20))
    np.testing.assert_array_equal(shuffled, event_order(20, "shuffled", seed=3))
    assert not np.array_equal(shuffled, event_order(20, "shuffled", seed=4))
    assert not np.array_equal(shuffled, np.arange(20))
    assert len(event_order(0, "shuffled")) == 0


def test_bad_order_message():
    assert ORDERS == ("recorded", "shuffled", "reversed", "blocked")
    assert check_order("reversed") == "reversed"
    with pytest.raises(ValueError, match=r"^Invalid value for the 'order' parameter\. Allowed values "
                                         r"are 'recorded', 'shuffled', 'reversed' and 'blocked', but "
                                         r"got 'shuffle' instead\.$"):
        event_order(3, "shuffle")


# --- clock -------------------------------------------------------------------------------------

class FakeClock:
    """A clock that only moves when the code under test sleeps or the test does work."""

    def __init__(self, now=100.0, oversleep=0.0):
        self.now, self.oversleep, self.sleeps = now, oversleep, []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds + self.oversleep


def test_pacer_targets_measured_from_start():
    clock = FakeClock()
    pacer = Pacer(speed=2.0, clock=clock, sleep=clock.sleep)
    assert pacer.wait_until(0.0) == 0.0 and clock.sleeps == []  # the start is now
    clock.now += 0.3                                             # work before the next item
    assert pacer.wait_until(1.0) == 0.0                          # target 100.5
    assert clock.sleeps == [pytest.approx(0.2)] and clock.now == pytest.approx(100.5)
    clock.now += 2.0                                             # a long stall: now 102.5
    assert pacer.wait_until(2.0) == pytest.approx(1.5)           # target 101.0: late, no sleep
    assert len(clock.sleeps) == 1
    # The next target is start + 8 / 2 = 104.0, not the late release + 1.0.
    assert pacer.wait_until(8.0) == 0.0
    assert clock.sleeps[-1] == pytest.approx(1.5) and clock.now == pytest.approx(104.0)


def test_pacer_reports_oversleep():
    clock = FakeClock(oversleep=0.05)
    pacer = Pacer(speed=1.0, clock=clock, sleep=clock.sleep)
    pacer.wait_until(0.0)
    assert pacer.wait_until(1.0) == pytest.approx(0.05)
    # Lateness is not carried into the next target: it sleeps 0.95 to reach start + 2.
    assert pacer.wait_until(2.0) == pytest.approx(0.05)
    assert clock.sleeps == [pytest.approx(1.0), pytest.approx(0.95)]


@pytest.mark.parametrize("speed", [None, 0])
def test_pacer_as_fast_as_possible_never_sleeps(speed):
    def fail(*args):
        raise AssertionError("the pacer read the clock or slept")

    pacer = Pacer(speed=speed, clock=fail, sleep=fail)
    assert pacer.speed is None
    assert [pacer.wait_until(t) for t in (0.0, 5.0, 1e6)] == [0.0, 0.0, 0.0]


def test_pacer_negative_speed():
    with pytest.raises(ValueError, match="speed must be non-negative .*, got -1"):
        Pacer(speed=-1)


# --- trials ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def recording(tiny_recording):
    return open_recording(tiny_recording)


def trials(recording, **kwargs):
    return list(replay_session(recording, SUBJECT, SESSION, **kwargs))


def test_recorded_order_follows_events(recording):
    events = recording.events(SUBJECT, SESSION)
    replayed = trials(recording)
    assert [t.index for t in replayed] == [t.event for t in replayed] == list(range(len(events)))
    np.testing.assert_array_equal([t.stimulus for t in replayed], events.stimulus)
    np.testing.assert_array_equal([t.repeat for t in replayed], events.repeat)
    np.testing.assert_array_equal([t.onset_s for t in replayed], events.onset_s)
    np.testing.assert_array_equal([t.duration_s for t in replayed], events.duration_s)
    for t in replayed:
        assert t.name == recording.stimulus_names[t.stimulus]
        assert t.category == recording.categories[t.stimulus]
        assert t.sample_rate == recording.sample_rate and t.frame_rate == 1.0
        assert t.waveform.dtype == np.float32
        np.testing.assert_array_equal(t.waveform, recording.audio(t.stimulus))


def test_reversed_and_shuffled_are_permutations(recording):
    n = len(recording.events(SUBJECT, SESSION))
    reversed_ = [t.event for t in trials(recording, order="reversed")]
    assert reversed_ == list(range(n))[::-1]
    shuffled = [t.event for t in trials(recording, order="shuffled", seed=1)]
    assert sorted(shuffled) == list(range(n)) and shuffled != list(range(n))
    assert shuffled == [t.event for t in trials(recording, order="shuffled", seed=1)]
    assert shuffled != [t.event for t in trials(recording, order="shuffled", seed=2)]
    assert shuffled == event_order(n, "shuffled", seed=1).tolist()


@pytest.mark.parametrize("tail_s", [6.0, 2.5])
def test_frame_windows(recording, tail_s):
    Y = recording.responses(SUBJECT, SESSION)[:]
    fr = recording.frame_rate(SUBJECT, SESSION)
    for t in trials(recording, order="shuffled", tail_s=tail_s):
        start = int(math.floor(t.onset_s * fr))
        length = math.ceil((t.duration_s + tail_s) * fr)
        assert t.frames.dtype == np.float32
        assert len(t.frames) == min(length, len(Y) - start)
        np.testing.assert_array_equal(t.frames, Y[start:start + length])
    # The fixture's last trial (onset 68 s of 72 frames) is clipped by the end of the recording.
    assert frame_window(68.0, 1.0, 6.0, 1.0, 72) == slice(68, 72)


def test_frame_window_fractional():
    # 2 Hz frames, onset at 3.25 s: frame 6; 1.2 s + 0.5 s tail = 3.4 frames -> 4.
    assert frame_window(3.25, 1.2, 0.5, 2.0, 100) == slice(6, 10)


def test_resampled_waveforms(recording):
    for t in trials(recording, sample_rate=8000):
        assert t.sample_rate == 8000 and t.waveform.dtype == np.float32
        assert len(t.waveform) == len(recording.audio(t.stimulus)) // 2
    tone = np.sin(2 * np.pi * 500 * np.arange(16000) / 16000).astype(np.float32)
    half = resample(tone, 16000, 8000)
    np.testing.assert_allclose(half[100:-100], tone[::2][100:-100], atol=1e-2)


def test_start_skips_trials(recording):
    full = trials(recording, order="shuffled", seed=5)
    resumed = trials(recording, order="shuffled", seed=5, start=5)
    assert [t.index for t in resumed] == list(range(5, len(full)))
    assert [t.event for t in resumed] == [t.event for t in full[5:]]
    np.testing.assert_array_equal(resumed[0].frames, full[5].frames)


def test_release_times(recording, monkeypatch):
    waits = []

    class Recorder:
        def __init__(self, speed):
            assert speed == 3.0

        def wait_until(self, t):
            waits.append(float(t))
            return 0.0

    monkeypatch.setattr(replay.trials, "Pacer", Recorder)
    events = recording.events(SUBJECT, SESSION)
    period = float(events.onset_s[1] - events.onset_s[0])  # the fixture's trials are evenly spaced
    list(replay_session(recording, SUBJECT, SESSION, speed=3.0, start=2))
    # Each trial is released one period after the previous one, counted from the first replayed.
    np.testing.assert_allclose(waits, period * np.arange(len(events) - 2))


def test_repeated_responses_cut_every_presentation(tiny_recording):
    from replay.store import open_recording
    from replay.trials import frame_window, repeated_responses

    rec = open_recording(tiny_recording)
    responses, stimuli = repeated_responses(rec, "sub-01", "0", tail_s=3.0)
    events = rec.events("sub-01", "0")
    assert responses.shape == (6, 2, 4, 24) and stimuli.tolist() == list(range(6))
    second = np.flatnonzero(events.stimulus == 4)[1]
    w = frame_window(events.onset_s[second], events.duration_s[second], 3.0, 1.0, 10**6)
    np.testing.assert_array_equal(responses[4, 1], rec.responses("sub-01", "0")[w])


def test_blocked_order_groups_sounds_by_category(tiny_recording):
    from replay.store import open_recording

    rec = open_recording(tiny_recording)
    trials = list(replay_session(rec, "sub-01", "0", order="blocked", seed=3))
    labels = [t.category for t in trials]
    changes = sum(a != b for a, b in zip(labels, labels[1:]))
    assert changes == len(set(labels)) - 1  # one contiguous block per category
    for category in set(labels):  # recorded order inside each block
        events = [t.event for t in trials if t.category == category]
        assert events == sorted(events)
    with pytest.raises(ValueError, match="one category label per event"):
        event_order(3, "blocked")
