"""The encoder service and its client, over real ZeroMQ sockets (inproc, loopback TCP, a child process)."""
import itertools
import json
import re
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import zmq

from encoders.client import EncoderClient, EncoderError, spawn_service
from encoders.encoding import PrequentialEncoder
from encoders.monitor import Monitor
from encoders.lags import lagged
from encoders import service as service_module
from encoders.service import EncoderService, check_endpoint
from replay import wire

pytestmark = pytest.mark.timeout(60)

LAYERS, LAGS, N_VOXELS, N_FRAMES = ["a", "b"], [0, 1, 2], 5, 9
OPEN = {"layers": LAYERS, "n_voxels": N_VOXELS, "n_units": 4, "lags": LAGS,
        "alphas": [0.5, 2.0, 50.0], "warmup": 2}
_names = itertools.count()


def _trials(seed, n_trials=8):
    """(sound, features, frames) of a linear FIR cortex read from layer a; b is noise."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((3 * len(LAGS), N_VOXELS))
    out = []
    for t in range(n_trials):
        Xa = rng.standard_normal((N_FRAMES, 3)).astype(np.float32)
        Xb = rng.standard_normal((N_FRAMES, 4)).astype(np.float32)
        Y = (lagged(Xa, LAGS) @ W + 0.5 * rng.standard_normal((N_FRAMES, N_VOXELS))).astype(np.float32)
        out.append((t % 4, {"a": Xa, "b": Xb}, Y))
    return out


class Served:
    """An EncoderService answering in a thread, on its own context."""

    def __init__(self, bind):
        self.context = zmq.Context()
        self.service = EncoderService(bind, context=self.context)
        self.thread = threading.Thread(target=self.service.serve_forever, daemon=True)
        self.thread.start()

    def client(self, timeout_s=5.0):
        return EncoderClient(self.service.endpoint, timeout_s=timeout_s, context=self.context)

    def raw(self):
        """A bare DEALER socket that never waits more than 5 s for a reply."""
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.RCVTIMEO, 5000)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.service.endpoint)
        return sock

    def stop(self):
        if self.thread.is_alive():
            client = self.client()
            try:
                client.shutdown()
            finally:
                client.close()
        self.thread.join(5)
        self.context.destroy(linger=0)


@pytest.fixture(params=["inproc", "tcp"])
def served(request):
    bind = f"inproc://encoder-{next(_names)}" if request.param == "inproc" else "tcp://127.0.0.1:*"
    s = Served(bind)
    yield s
    s.stop()


@pytest.fixture
def served_inproc():
    s = Served(f"inproc://encoder-{next(_names)}")
    yield s
    s.stop()


def _local_run(trials):
    enc = PrequentialEncoder(LAYERS, OPEN["n_voxels"], OPEN["n_units"], OPEN["lags"],
                             OPEN["alphas"], OPEN["warmup"])
    trial_r = []
    for t, (s, f, Y) in enumerate(trials):
        scores = enc.step(t, s, f, Y)
        trial_r.append(np.array([scores[n] for n in LAYERS]))
    r, r2, alpha = enc.r(), enc.r2(), enc.alpha()
    final = {"r": np.stack([r[n] for n in LAYERS]), "r2": np.stack([r2[n] for n in LAYERS]),
             "alpha": np.stack([alpha[n] for n in LAYERS]), "drift": enc.drift_events(),
             "unit_stats": enc.unit_stats()}
    return trial_r, final


def test_round_trip_equals_a_local_encoder(served):
    trials = _trials(0)
    expected_r, expected = _local_run(trials)
    client = served.client()
    try:
        client.open("run-1", **OPEN)
        for t, (sound, features, frames) in enumerate(trials):
            np.testing.assert_array_equal(client.trial("run-1", t, sound, features, frames),
                                          expected_r[t])
        final = client.finish("run-1")
    finally:
        client.close()
    assert sorted(final) == ["alpha", "drift", "dropped_frames", "r", "r2", "trials", "unit_stats"]
    assert final.pop("trials") == len(trials) and final.pop("dropped_frames") == 0
    for name in final:
        np.testing.assert_array_equal(final[name], expected[name])
    assert final["r"].shape == (2, N_VOXELS) and final["unit_stats"].shape == (2, 4, 6, N_VOXELS)
    assert final["r"][0].mean() > 0.5 > final["r"][1].mean()  # a carries the signal, b does not
    # Each voxel's penalty comes back from the grid: weaker for the layer that carries signal.
    assert set(final["alpha"].ravel()) <= set(OPEN["alphas"])
    assert final["alpha"][0].mean() < final["alpha"][1].mean()
    assert served.service.errors == 0 and served.service.runs == {}  # finish closed the run


def test_interleaved_runs_are_independent(served_inproc):
    runs = {"x": _trials(1, 6), "y": _trials(2, 6)}
    client = served_inproc.client()
    try:
        for run in runs:
            client.open(run, **OPEN)
        got = {run: [] for run in runs}
        for t in range(6):
            for run, trials in runs.items():
                sound, features, frames = trials[t]
                got[run].append(client.trial(run, t, sound, features, frames))
        finals = {run: client.finish(run) for run in runs}
    finally:
        client.close()
    for run, trials in runs.items():
        expected_r, expected = _local_run(trials)
        np.testing.assert_array_equal(np.array(got[run]), np.array(expected_r))
        np.testing.assert_array_equal(finals[run]["r"], expected["r"])


def _with_header(frames, **changes):
    header = json.loads(bytes(frames[1]))
    header.update(changes)
    return [frames[0], json.dumps(header).encode(), *frames[2:]]


def _trial_frames(run="run-1", features=None, frames=None, **fields):
    _, f, Y = _trials(3, 1)[0]
    features = f if features is None else features
    arrays = {"frames": Y if frames is None else frames,
              **{f"features/{k}": v for k, v in features.items()}}
    return wire.encode("trial", {"run": run, "trial": 0, "unit": 0, **fields}, arrays, seq=7)


def _open_frames(**changes):
    return wire.encode("open", {"run": "run-1", **{**OPEN, **changes}}, seq=3)


_, _F, _Y = _trials(3, 1)[0]
BAD = {
    "one garbage frame": (True, lambda: [b"\xff\x00garbage"], r"message has 1 frame\(s\)"),
    "garbage header": (True, lambda: [b"trial", b"\xff\xfe{not json"], "not valid UTF-8"),
    "json that is not an object": (True, lambda: [b"trial", b"[1, 2]"], "must be a JSON object"),
    "wrong version": (True, lambda: _with_header(_trial_frames(), v=99),
                      "Invalid protocol version. Allowed value is 1, but got 99"),
    "short payload": (True, lambda: _trial_frames()[:-1] + [b"\x00" * 5],
                      "declares 144 bytes but its frame has 5"),
    "unknown run": (True, lambda: _trial_frames(run="nope"), "unknown run 'nope'"),
    "trial before open": (False, lambda: _trial_frames(), "unknown run 'run-1'"),
    "features missing a layer": (True, lambda: _trial_frames(features={"a": _F["a"]}),
                                 r"lacks features for layer\(s\) \['b'\]"),
    "frames with a voxel too many": (True, lambda: _trial_frames(frames=np.zeros((N_FRAMES, 6), np.float32)),
                                     r"2-D arrays \(n_frames, 5 voxels\), but got shape \(9, 6\)"),
    "frames with a frame too few": (True, lambda: _trial_frames(frames=_Y[:-1]),
                                    "have 9 frames but the trial has 8 brain frames"),
    "0-d frames": (True, lambda: _trial_frames(frames=np.float32(1.0)), r"but got shape \(\)"),
    "no frames": (True, lambda: wire.encode("trial", {"run": "run-1", "trial": 0, "unit": 0}),
                  "needs a 'frames' array"),
    "open without n_voxels": (False, lambda: wire.encode("open", {"run": "r", "layers": ["a"]}),
                              "'n_voxels'"),
    "open with a number too large": (False, lambda: _with_header(_open_frames(), n_voxels=10**400),
                                     "Maximum allowed dimension exceeded"),
    "open with a float overflow": (False, lambda: [b"open", bytes(_open_frames()[1])[:-1]
                                                   + b',"n_units":1e400}'],
                                   "'n_units' field of 'open'. Allowed values are an integer >= 0 "
                                   r"\(0: as many as the run sends\), but got inf"),
    "open with a string for a number": (False, lambda: _with_header(_open_frames(), n_voxels="5"),
                                        "'n_voxels' field of 'open'.*but got '5' instead"),
    "open with a run name too long": (False, lambda: _with_header(_open_frames(), run="r" * 300),
                                      "'run' field of 'open'. Allowed values are a string of 1 to 256"),
    "unit out of range": (True, lambda: _trial_frames(unit=99), "'unit' parameter"),
    "a kind the service does not take": (True, lambda: wire.encode("scores", {"run": "run-1"}),
                                         "does not take 'scores' requests"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_request_gets_an_error_reply_and_the_service_carries_on(served_inproc, case):
    open_first, make, reason = BAD[case]
    service = served_inproc.service
    client = served_inproc.client()
    sock = served_inproc.raw()
    try:
        if open_first:
            client.open("run-1", **OPEN)
        sock.send_multipart(make())
        reply = wire.recv(sock)
        assert reply.kind == "error"
        assert reply.header["errors"] == 1 and service.errors == 1
        assert len(reply.header["reason"]) > 0
        assert re.search(reason, reply.header["reason"]), reply.header["reason"]
        assert served_inproc.thread.is_alive()
        # A valid run still works afterwards, with the same scores as a run on a fresh service.
        trials = _trials(4, 4)
        client.open("after", **OPEN)
        got = [client.trial("after", t, s, f, Y) for t, (s, f, Y) in enumerate(trials)]
        expected_r, _ = _local_run(trials)
        np.testing.assert_array_equal(np.array(got), np.array(expected_r))
        assert service.errors == 1
    finally:
        sock.close()
        client.close()


def test_a_refused_trial_leaves_the_run_as_it_was(served_inproc):
    trials = _trials(5, 5)
    expected_r, expected = _local_run(trials)
    client = served_inproc.client()
    try:
        client.open("run-1", **OPEN)
        for t, (s, f, Y) in enumerate(trials):
            with pytest.raises(EncoderError, match=r"rejected 'trial': features of layer 'b' have 8"):
                client.trial("run-1", t, s, {"a": f["a"], "b": f["b"][:-1]}, Y)
            np.testing.assert_array_equal(client.trial("run-1", t, s, f, Y), expected_r[t])
        np.testing.assert_array_equal(client.finish("run-1")["unit_stats"], expected["unit_stats"])
    finally:
        client.close()
    assert served_inproc.service.errors == len(trials)


def test_a_run_with_components_equals_a_local_projected_encoder_and_resumes(served_inproc):
    """'components' reaches the encoder as the integer sent; its snapshot restores only into a
    run of the same components."""
    trials = _trials(14, 8)
    local = PrequentialEncoder(LAYERS, OPEN["n_voxels"], OPEN["n_units"], OPEN["lags"],
                               OPEN["alphas"], OPEN["warmup"], components=2)
    expected = [local.step(t, s, f, Y) for t, (s, f, Y) in enumerate(trials)]
    expected = [np.array([trial_r[n] for n in LAYERS]) for trial_r in expected]
    client = served_inproc.client()
    try:
        client.open("p", **OPEN, components=2)
        got = [client.trial("p", t, *trial) for t, trial in enumerate(trials[:5])]
        at, state = client.snapshot("p")
        with pytest.raises(EncoderError, match=r"rejected 'open': Invalid value for the 'state' "
                                               r"parameter\. Allowed values are states of an "
                                               r"encoder with components=0, but got one made "
                                               r"with components=2 instead\."):
            client.open("p", **OPEN, state=state)
        assert client.open("p", **OPEN, components=2, state=state) == at == 5
        got += [client.trial("p", t, *trials[t]) for t in range(5, 8)]
        final = client.finish("p")
    finally:
        client.close()
    np.testing.assert_array_equal(np.array(got), np.array(expected))
    np.testing.assert_array_equal(final["r"], np.stack([local.r()[n] for n in LAYERS]))


@pytest.mark.parametrize("value", [-1, 2.5, 2.0, "2", True, None, [2]])
def test_components_of_another_type_is_refused(served_inproc, value):
    client = served_inproc.client()
    try:
        with pytest.raises(EncoderError, match=r"Invalid value for the 'components' field of "
                                               r"'open'\. Allowed values are an integer >= 0, "
                                               r"but got "):
            client.open("r", **OPEN, components=value)
        assert client.status()["runs"] == {} and served_inproc.service.errors == 1
        client.open("r", **OPEN, components=0)  # an integer >= 0 is taken
    finally:
        client.close()


def test_client_error_names_the_request(served_inproc):
    client = served_inproc.client()
    try:
        with pytest.raises(EncoderError, match=r"encoder service rejected 'finish': unknown run 'x'"):
            client.finish("x")
    finally:
        client.close()


def test_client_times_out_when_nobody_answers():
    with socket.socket() as s:  # a loopback port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = zmq.Context()
    client = EncoderClient(f"tcp://127.0.0.1:{port}", timeout_s=0.2, context=context)
    try:
        with pytest.raises(EncoderError, match=r"no reply from the encoder service at tcp://127\.0\.0\.1:\d+ "
                                               r"to 'shutdown' request 1"):
            client.shutdown()
    finally:
        client.close()
        context.destroy(linger=0)


@pytest.mark.parametrize("endpoint", ["tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://8.8.8.8:5555",
                                      "tcp://192.168.1.10:5555", "tcp://127.0.0.1.example.org:5555"])
def test_check_endpoint_refuses_non_loopback_tcp(endpoint):
    with pytest.raises(ValueError, match="refusing to bind .* binds to the loopback interface only") as err:
        check_endpoint(endpoint)
    assert "\n" not in str(err.value) and endpoint in str(err.value)


@pytest.mark.parametrize("endpoint", ["udp://127.0.0.1:5555", "127.0.0.1:5555", "tcp://"])
def test_check_endpoint_refuses_other_schemes(endpoint):
    with pytest.raises(ValueError, match=r"Invalid endpoint .*: use tcp://127\.0\.0\.1:PORT, ipc://PATH "
                                         r"or inproc://NAME") as err:
        check_endpoint(endpoint)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:5555", "tcp://127.0.0.1:*", "tcp://localhost:5555",
                                      "tcp://[::1]:5555", "ipc:///tmp/encoder.sock", "inproc://encoder"])
def test_check_endpoint_accepts_loopback_ipc_and_inproc(endpoint):
    assert check_endpoint(endpoint) == endpoint


def test_spawned_service_process_serves_a_run_and_exits_cleanly():
    trials = _trials(6)
    expected_r, expected = _local_run(trials)
    proc, endpoint = spawn_service("tcp://127.0.0.1:*")
    context = zmq.Context()
    client = EncoderClient(endpoint, timeout_s=20, context=context)
    try:
        assert endpoint.startswith("tcp://127.0.0.1:")
        client.open("run-1", **OPEN)
        got = [client.trial("run-1", t, s, f, Y) for t, (s, f, Y) in enumerate(trials)]
        final = client.finish("run-1")
        np.testing.assert_allclose(np.array(got), np.array(expected_r), rtol=1e-9, atol=1e-12)
        for name in expected:
            np.testing.assert_allclose(final[name], expected[name], rtol=1e-9, atol=1e-12)
        with pytest.raises(EncoderError, match="unknown run 'run-1'"):  # survives bad input too
            client.finish("run-1")
        client.shutdown()
        assert proc.wait(timeout=20) == 0
    finally:
        client.close()
        context.destroy(linger=0)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def test_spawn_service_reports_a_refused_bind():
    with pytest.raises(EncoderError, match="the encoder service did not start"):
        spawn_service("tcp://0.0.0.0:5555")


def test_service_stops_when_its_context_is_terminated():
    # A dead socket is not bad input: the loop must end, not spin on errors.
    context = zmq.Context()
    service = EncoderService(f"inproc://encoder-{next(_names)}", context=context)
    raised = []

    def serve():
        try:
            service.serve_forever()
        except zmq.ZMQError as err:
            raised.append(err.errno)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    context.term()  # returns once the service has closed its socket
    thread.join(5)
    assert not thread.is_alive() and raised == [zmq.ETERM] and service.errors == 0


def test_spawned_service_stops_when_its_parent_dies(tmp_path):
    """The service watches the pid that started it, so a killed run leaves no process behind."""
    script = ("from encoders.client import spawn_service\n"
              "proc, endpoint = spawn_service()\n"
              "print(proc.pid, flush=True)\n"
              "import time; time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.2)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


# -- exactly once: sequence numbers, re-delivery, snapshots ---------------------------------


def test_a_trial_sent_again_is_answered_again_and_applied_once(served_inproc):
    trials = _trials(3)
    expected_r, expected = _local_run(trials)
    client = served_inproc.client()
    try:
        client.open("r", **OPEN)
        for t, (sound, features, frames) in enumerate(trials):
            np.testing.assert_array_equal(client.trial("r", t, sound, features, frames), expected_r[t])
            # A re-delivery (a client that lost the reply and sent again): the same answer.
            np.testing.assert_array_equal(client.trial("r", t, sound, features, frames), expected_r[t])
        assert client.status()["duplicates"] == len(trials)
        final = client.finish("r")
    finally:
        client.close()
    np.testing.assert_array_equal(final["unit_stats"], expected["unit_stats"])  # each trial once
    assert final["trials"] == len(trials)


def test_a_gap_or_a_stale_trial_is_refused_and_changes_nothing(served_inproc):
    trials = _trials(4)
    client = served_inproc.client()
    try:
        client.open("r", **OPEN)
        sound, features, frames = trials[0]
        client.trial("r", 0, sound, features, frames)
        with pytest.raises(EncoderError, match="expects trial 1 next, but got trial 2"):
            client.trial("r", 2, *trials[2])
        with pytest.raises(EncoderError, match="'trial' field of 'trial'. Allowed values are an "
                                               "integer >= 0, but got '1' instead"):
            client.request("trial", {"run": "r", "trial": "1", "unit": 0},
                           {"frames": frames, **{f"features/{k}": v for k, v in features.items()}})
        assert client.status()["runs"] == {"r": 1}
    finally:
        client.close()


def test_snapshot_then_reopen_continues_exactly(served_inproc):
    """A run restored from its snapshot into a new session (as after a crash) ends bit for bit
    where the uninterrupted run does, in float64."""
    trials = _trials(5, 10)
    options = {**OPEN, "dtype": "float64"}
    client = served_inproc.client()
    try:
        client.open("whole", **options)
        whole = [client.trial("whole", t, *trial) for t, trial in enumerate(trials)]
        expected = client.finish("whole")
        client.open("cut", **options)
        got = [client.trial("cut", t, *trial) for t, trial in enumerate(trials[:6])]
        at, state = client.snapshot("cut")
        client.trial("cut", 6, *trials[6])  # applied, then lost with the crash
        assert at == 6
        assert client.open("cut", **options, state=state) == 6  # reopening replaces the session
        got += [client.trial("cut", t, *trials[t]) for t in range(6, 10)]
        final = client.finish("cut")
    finally:
        client.close()
    np.testing.assert_array_equal(np.array(got), np.array(whole))
    for name in expected:
        np.testing.assert_array_equal(final[name], expected[name], err_msg=name)


def test_a_state_that_does_not_fit_is_refused(served_inproc):
    client = served_inproc.client()
    try:
        client.open("r", **OPEN)
        client.trial("r", 0, *_trials(6)[0])
        _, state = client.snapshot("r")
        with pytest.raises(EncoderError, match="score sums of shape"):
            client.open("other", **{**OPEN, "n_voxels": N_VOXELS + 1}, state=state)
        del state["layer-1"]
        with pytest.raises(EncoderError, match="lacking 'layer-1'"):
            client.open("other", **OPEN, state=state)
        assert "other" not in client.status()["runs"]
    finally:
        client.close()


# -- backpressure -------------------------------------------------------------------------


def test_pipelined_trials_are_bounded_by_the_window_and_equal_lockstep(served_inproc):
    trials = _trials(7, 40)
    expected_r, expected = _local_run(trials)
    client = EncoderClient(served_inproc.service.endpoint, timeout_s=5,
                           context=served_inproc.context, window=3)
    try:
        client.open("r", **OPEN)
        got = {}
        for t, (sound, features, frames) in enumerate(trials):  # as fast as the socket takes them
            got.update(client.submit("r", t, sound, features, frames))
            assert len(client._trials) <= 3
        got.update(client.drain())
        final = client.finish("r")
    finally:
        client.close()
    assert client.max_in_flight == 3 and sorted(got) == list(range(40))
    for t in range(40):
        np.testing.assert_array_equal(got[t], expected_r[t])
    np.testing.assert_array_equal(final["unit_stats"], expected["unit_stats"])


# -- non-finite frames ----------------------------------------------------------------------


def test_frames_with_nan_or_inf_are_dropped_and_counted(served_inproc):
    """The policy: a frame holding any non-finite value is neither scored nor learned from; the
    run equals one that never had those frames (on a lag-0 model, where rows are independent)."""
    rng = np.random.default_rng(8)
    options = {**OPEN, "lags": [0], "dtype": "float64"}
    clean, dirty = [], []
    for t in range(8):
        X = {"a": rng.standard_normal((N_FRAMES, 3)).astype(np.float32),
             "b": rng.standard_normal((N_FRAMES, 4)).astype(np.float32)}
        Y = (X["a"] @ rng.standard_normal((3, N_VOXELS))).astype(np.float32)
        bad = rng.random(N_FRAMES) < 0.2
        Yd = Y.copy()
        Yd[bad, rng.integers(N_VOXELS)] = rng.choice([np.nan, np.inf, -np.inf])
        clean.append((t % 4, {k: v[~bad] for k, v in X.items()}, Y[~bad]))
        dirty.append((t % 4, X, Yd))
    n_bad = sum(len(Y) - len(Yc) for (_, _, Y), (_, _, Yc) in zip(dirty, clean))
    client = served_inproc.client()
    try:
        client.open("clean", **options)
        client.open("dirty", **options)
        for t in range(8):
            np.testing.assert_allclose(client.trial("dirty", t, *dirty[t]),
                                       client.trial("clean", t, *clean[t]), rtol=1e-12)
        a, b = client.finish("clean"), client.finish("dirty")
    finally:
        client.close()
    assert n_bad > 0 and b["dropped_frames"] == n_bad and a["dropped_frames"] == 0
    np.testing.assert_allclose(b["unit_stats"], a["unit_stats"], rtol=1e-12, atol=1e-12)


# -- monitoring -----------------------------------------------------------------------------


def test_a_monitor_is_greeted_then_follows_and_counts_what_it_missed():
    context = zmq.Context()
    service = EncoderService(f"inproc://encoder-{next(_names)}", context=context,
                             monitor=f"inproc://monitor-{next(_names)}")
    thread = threading.Thread(target=service.serve_forever, daemon=True)
    thread.start()
    client = EncoderClient(service.endpoint, timeout_s=5, context=context)
    trials = _trials(9, 6)
    try:
        client.open("r", **OPEN)
        client.trial("r", 0, *trials[0])  # published before anyone listens: a late joiner's gap
        sub = context.socket(zmq.SUB)
        sub.setsockopt(zmq.RCVTIMEO, 5000)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(service.monitor_endpoint)
        hello = wire.recv(sub)
        assert hello.kind == "hello" and hello.header["runs"] == {"r": 1}
        for t in range(1, 6):
            client.trial("r", t, *trials[t])
        seen = [wire.recv(sub) for _ in range(5)]
        assert [m.header["trial"] for m in seen] == [1, 2, 3, 4, 5]
        # Sequence numbers run on from the greeting: a subscriber counts any gap it meets.
        assert [m.seq for m in seen] == list(range(hello.seq + 1, hello.seq + 6))
        client.shutdown()
    finally:
        client.close()
        thread.join(5)
        context.destroy(linger=0)


def test_a_slow_monitor_loses_messages_and_counts_every_one(monkeypatch):
    """Monitoring may drop: past the high-water mark a slow follower loses messages, its
    sequence numbers show exactly how many, and the trials themselves lose nothing."""
    monkeypatch.setattr(service_module, "MONITOR_HWM", 2)
    context = zmq.Context()
    service = EncoderService(f"inproc://encoder-{next(_names)}", context=context,
                             monitor=f"inproc://monitor-{next(_names)}")
    thread = threading.Thread(target=service.serve_forever, daemon=True)
    thread.start()
    client = EncoderClient(service.endpoint, timeout_s=5, context=context)
    monitor = Monitor(service.monitor_endpoint, context=context, timeout_s=0.5, hwm=2)
    trials = _trials(10, 41)
    try:
        client.open("r", **OPEN)
        assert monitor.recv().kind == "hello"  # greeted before anything else
        for t, trial in enumerate(trials[:40]):  # the monitor reads nothing meanwhile
            client.trial("r", t, *trial)
        seen = []
        while True:
            try:
                seen.append(monitor.recv())
            except zmq.Again:
                break
        # A gap shows when the next message arrives: one more trial, read at once.
        client.trial("r", 40, *trials[40])
        seen.append(monitor.recv())
        assert client.finish("r")["trials"] == 41  # the lossless path lost nothing
        client.shutdown()
    finally:
        client.close()
        monitor.close()
        thread.join(5)
        context.destroy(linger=0)
    assert 1 < len(seen) < 41 and monitor.missed > 0
    assert len(seen) + monitor.missed == 41  # every progress message: received or counted missed
    assert seen[-1].header["trial"] == 40


def test_monitor_command_follows_a_spawned_service(capsys):
    """`cortexreplay monitor` on a service process started with a monitor endpoint."""
    from simulator.cli import main

    with socket.socket() as s:  # a free loopback port for the monitor
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc, endpoint = spawn_service(monitor=f"tcp://127.0.0.1:{port}")
    client = EncoderClient(endpoint, timeout_s=10)
    follower = threading.Thread(target=main, args=(["monitor", f"tcp://127.0.0.1:{port}",
                                                    "--count", "3", "--timeout", "10"],))
    try:
        client.open("r", **OPEN)
        follower.start()
        time.sleep(1.0)  # the subscription reaches the service
        for t, trial in enumerate(_trials(11, 3)):
            client.trial("r", t, *trial)
        follower.join(20)
        client.shutdown()
        proc.wait(10)
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
    out = capsys.readouterr().out
    assert "monitor: joined; open runs: r at trial 0" in out
    assert "r trial 2: r " in out and "monitor: 4 message(s) received, 0 missed" in out


def test_a_refused_trial_leaves_its_run_as_it_was(served_inproc):
    client = served_inproc.client()
    trials = _trials(12, 2)
    try:
        client.open("r", **OPEN)
        with pytest.raises(EncoderError, match="'unit' parameter"):
            client.trial("r", 0, 99, trials[0][1], trials[0][2])
        assert client.status()["runs"] == {"r": 0} and client.status()["trials"] == 0
        client.trial("r", 0, *trials[0])  # trial 0 is still the one it expects
    finally:
        client.close()


def test_a_reply_too_large_to_send_becomes_an_error_and_the_service_lives_on(served_inproc):
    """'status' lists every open run: 300 runs of 250-character names exceed a 64 kB header."""
    client = served_inproc.client()
    try:
        for i in range(300):
            client.open(f"{i:03d}" + "r" * 247, **OPEN)
        with pytest.raises(EncoderError, match="the reply to this request cannot be sent: header "
                                               "has .* bytes, at most 65536"):
            client.status()
        client.open("small", **OPEN)
        client.trial("small", 0, *_trials(13, 1)[0])
    finally:
        client.close()
    assert served_inproc.thread.is_alive()


def _glover_trials(seed, n_trials=8, rate=1 / 1.49):
    """(sound, features, frames) of a canonical-HRF cortex read from layer a; b is noise."""
    from encoders.hrf import convolved, glover_kernel

    rng = np.random.default_rng(seed)
    W = rng.standard_normal((3, N_VOXELS))
    out = []
    for t in range(n_trials):
        Xa = rng.standard_normal((N_FRAMES, 3)).astype(np.float32)
        Xb = rng.standard_normal((N_FRAMES, 4)).astype(np.float32)
        Y = convolved(Xa.astype(np.float64), glover_kernel(rate)) @ W
        out.append((t % 4, {"a": Xa, "b": Xb}, (Y + 0.3 * rng.standard_normal(Y.shape))
                    .astype(np.float32)))
    return out


def test_a_glover_run_equals_a_local_glover_encoder_and_resumes_only_as_glover(served_inproc):
    """'hrf' and 'frame_rate_hz' reach the encoder (the rate as a float); a snapshot keeps the
    design and restores only into a run of the same one."""
    rate = 1 / 1.49
    trials = _glover_trials(40)
    local = PrequentialEncoder(LAYERS, OPEN["n_voxels"], OPEN["n_units"], OPEN["lags"],
                               OPEN["alphas"], OPEN["warmup"], hrf="glover", frame_rate_hz=rate)
    expected = [np.array([r[n] for n in LAYERS])
                for r in (local.step(t, s, f, Y) for t, (s, f, Y) in enumerate(trials))]
    client = served_inproc.client()
    try:
        client.open("g", **OPEN, hrf="glover", frame_rate_hz=np.float64(rate))
        got = [client.trial("g", t, *trial) for t, trial in enumerate(trials[:5])]
        at, state = client.snapshot("g")
        assert state["layer-0"]["ridge"]["hrf"] == "glover"
        with pytest.raises(EncoderError, match=r"rejected 'open': Invalid value for the 'state' "
                                               r"parameter\. Allowed values are states of an "
                                               r"encoder with hrf='fir'"):
            client.open("g", **OPEN, state=state)
        assert client.open("g", **OPEN, state=state, hrf="glover", frame_rate_hz=rate) == at == 5
        got += [client.trial("g", t, *trials[t]) for t in range(5, 8)]
        final = client.finish("g")
        # A frame rate sent with the FIR default is taken (and ignored): the same run as without.
        client.open("f", **OPEN, frame_rate_hz=1)
        fir = [client.trial("f", t, *trial) for t, trial in enumerate(trials)]
    finally:
        client.close()
    np.testing.assert_array_equal(np.array(got), np.array(expected))
    np.testing.assert_array_equal(final["r"], np.stack([local.r()[n] for n in LAYERS]))
    np.testing.assert_array_equal(np.array(fir), np.array(_local_run(trials)[0]))
    assert final["r"][0].mean() > np.array(fir)[-1][0]  # the right design fits better


def test_a_default_open_is_the_message_it_was_before_the_hrf_fields(served_inproc, monkeypatch):
    sent, send = [], EncoderClient.send

    def spy(self, kind, fields=None, arrays=None):
        sent.append(dict(fields))
        return send(self, kind, fields, arrays)

    monkeypatch.setattr(EncoderClient, "send", spy)
    client = served_inproc.client()
    try:
        client.open("r", **OPEN)
        client.open("r", **OPEN, hrf="glover", frame_rate_hz=0.5)
    finally:
        client.close()
    assert "hrf" not in sent[0] and "frame_rate_hz" not in sent[0]
    assert (sent[1]["hrf"], sent[1]["frame_rate_hz"]) == ("glover", 0.5)


@pytest.mark.parametrize("fields, match", [
    ({"hrf": "spm", "frame_rate_hz": 1.0},
     r"Invalid value for the 'hrf' field of 'open'\. Allowed values are 'fir' or 'glover', but "
     r"got 'spm' instead\."),
    ({"hrf": ["glover"], "frame_rate_hz": 1.0}, r"'hrf' field of 'open'.*but got \['glover'\]"),
    ({"hrf": "glover"}, r"an 'open' request with hrf 'glover' needs the field 'frame_rate_hz' "
                        r"\(a finite number > 0"),
    *[({"hrf": "glover", "frame_rate_hz": bad},
       r"Invalid value for the 'frame_rate_hz' field of 'open'\. Allowed values are a finite "
       r"number > 0, but got ") for bad in (0, -1.0, "1", True, None, 10**400)],
    ({"frame_rate_hz": 0.0}, r"'frame_rate_hz' field of 'open'.*but got 0\.0"),
])
def test_bad_hrf_fields_are_refused_in_one_line(served_inproc, fields, match):
    sock = served_inproc.raw()
    try:
        sock.send_multipart(wire.encode("open", {"run": "r", **OPEN, **fields}, seq=1))
        reply = wire.recv(sock)
    finally:
        sock.close()
    assert reply.kind == "error" and re.search(match, reply.header["reason"]), reply.header
    assert "\n" not in reply.header["reason"]
    assert served_inproc.service.runs == {} and served_inproc.service.errors == 1
