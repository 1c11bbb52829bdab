"""The live ZeroMQ path: a fake scanner streams a stored session into a ZmqSource over real sockets."""
import threading

import numpy as np
import pytest
import zmq

from replay import wire
from replay.live import ZmqSource
from replay.scanner import Faults, stream_session
from replay.trials import replay_session

from test_assembly import N_VOXELS, TAIL, live_store, recording  # noqa: F401 - store fixtures

pytestmark = pytest.mark.timeout(60)


def _receive(recording, bind, send, timeout_s=10):  # noqa: F811
    """The trials and report of a ZmqSource at ``bind`` while ``send(endpoint, context)`` runs
    in a thread (the acquisition's side)."""
    context = zmq.Context()
    source = ZmqSource(bind, recording, sample_rate=8000, tail_s=TAIL, timeout_s=timeout_s,
                       context=context)
    thread = threading.Thread(target=send, args=(source.endpoint, context))
    thread.start()
    try:
        trials = list(source)
    finally:
        thread.join(20)
        source.close()
        context.term()
    return trials, source.report()


def _live(recording, faults=Faults(), bind="inproc://live", extra=()):  # noqa: F811
    """Trials of the session as a ZmqSource receives them from a fake scanner in a thread."""
    sent = {}

    def scanner(endpoint, context):
        push = context.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 1000)
        push.connect(endpoint)
        for frames in extra:  # what an acquisition may get wrong
            push.send_multipart(frames)
        sent["counts"] = stream_session(push, recording, "s1", 0, speed=None, faults=faults)
        push.close()

    trials, report = _receive(recording, bind, scanner)
    return trials, report, sent["counts"]


def test_fake_scanner_into_a_zmq_source_gives_the_stored_replays_trials(recording):  # noqa: F811
    stored = list(replay_session(recording, "s1", 0, tail_s=TAIL, sample_rate=8000))
    for bind in ("inproc://live-exact", "tcp://127.0.0.1:*"):
        live, report, sent = _live(recording, bind=bind)
        assert report["ended"] and report["bad_messages"] == 0 and report["missing"] == 0
        assert [t.stimulus for t in live] == [t.stimulus for t in stored]
        for a, b in zip(live, stored):
            np.testing.assert_array_equal(a.frames, b.frames)
            np.testing.assert_array_equal(a.waveform, b.waveform)
            assert (a.index, a.event, a.repeat, a.offset_s) == (b.index, b.event, b.repeat,
                                                                b.offset_s)
        assert sent.frames == report["frames"] and sent.events == report["events"] == 8


def test_injected_drops_jitter_and_duplicates_are_counted_and_survived(recording):  # noqa: F811
    faults = Faults(jitter_s=0.2, drop=0.05, duplicate=0.05, seed=3)
    live, report, sent = _live(recording, faults, bind="inproc://live-faults")
    assert report["ended"] and len(live) == 8
    assert sent.dropped > 0 and sent.duplicated > 0
    assert report["duplicates"] == sent.duplicated and report["jittered"] == 0
    assert report["missing"] == sum(int(np.isnan(t.frames).all(axis=1).sum()) for t in live) > 0
    assert report["missing"] <= sent.dropped  # a dropped frame outside every window is not missed


def test_bad_messages_are_counted_and_the_stream_goes_on(recording):  # noqa: F811
    extra = [
        [b"frames", b"{not json"],                                   # garbage
        wire.encode("frames", arrays={"frames": np.zeros((1, N_VOXELS), np.float32),
                                      "timestamps": np.zeros(1)}),   # before 'session'
        wire.encode("trial", {"run": "x"}),                          # not an acquisition kind
    ]
    live, report, _ = _live(recording, bind="inproc://live-bad", extra=extra)
    assert report["bad_messages"] == 3 and report["ended"] and len(live) == 8
    assert "before the 'session' message" in " ".join(report["reasons"])


def test_a_quiet_stream_times_out_and_releases_what_it_has(recording):  # noqa: F811
    context = zmq.Context()
    source = ZmqSource("inproc://live-quiet", recording, tail_s=TAIL, timeout_s=0.5,
                       context=context)
    push = context.socket(zmq.PUSH)
    push.connect(source.endpoint)
    try:
        wire.send(push, "session", {"frame_rate": 1.0, "n_voxels": N_VOXELS, "t0": 0.0})
        wire.send(push, "event", {"onset_s": 2.0, "duration_s": 2.0, "stimulus": 0})
        wire.send(push, "frames", arrays={"frames": np.ones((3, N_VOXELS), np.float32),
                                          "timestamps": np.array([0.0, 1.0, 2.0])})
        (trial,) = list(source)  # no 'end': after 0.5 s of silence the pending trial is released
    finally:
        push.close(linger=0)
        source.close()
        context.term()
    assert not source.report()["ended"] and trial.frames.shape == (1, N_VOXELS)


def test_a_live_source_binds_loopback_only_without_keys(recording):  # noqa: F811
    with pytest.raises(ValueError, match="refusing to bind 'tcp://0.0.0.0:5599' without CurveZMQ"):
        ZmqSource("tcp://0.0.0.0:5599", recording)


def test_bad_faults_are_refused():
    with pytest.raises(ValueError, match="'drop' parameter. Allowed values are probabilities"):
        Faults(drop=1.5)


def test_fake_scanner_command_streams_a_store_over_tcp(live_store, recording, capsys):  # noqa: F811
    from simulator.cli import main

    def command(endpoint, context):
        main(["fake-scanner", str(live_store), "--connect", endpoint, "--speed", "0",
              "--drop", "0.1", "--seed", "1"])

    trials, report = _receive(recording, "tcp://127.0.0.1:*", command, timeout_s=20)
    assert report["ended"] and len(trials) == 8 and report["missing"] > 0
    assert "fake-scanner: sent" in capsys.readouterr().out
