"""The live LSL path: a fake scanner's real pylsl outlets stream a stored session into an LslSource.

Every test names its own streams (a uuid), so that no test resolves another's outlets. LSL
discovery is confined to this machine by the package's lsl_api.cfg (LSLAPICFG), and the last
tests check that nothing leaves loopback.
"""
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import pytest

from replay.lsl import LOOPBACK_CONFIG, LslError, LslSender, LslSource, load_pylsl, markers_name
from replay.scanner import Faults, play_session
from replay.trials import replay_session

from test_assembly import N_VOXELS, TAIL, live_store, recording  # noqa: F401 - store fixtures

pytestmark = pytest.mark.timeout(30)


def _name() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


class _Thread(threading.Thread):
    """Runs ``target`` and keeps its result or its error, re-raised by `result` (in the test)."""

    def __init__(self, target):
        super().__init__(daemon=True)
        self._target_fn, self.value, self.error = target, None, None

    def run(self):
        try:
            self.value = self._target_fn()
        except BaseException as err:  # noqa: BLE001 - handed to the test
            self.error = err

    def result(self, timeout=20):
        self.join(timeout)
        assert not self.is_alive(), "the fake scanner did not finish"
        if self.error is not None:
            raise self.error
        return self.value


def _live(recording, faults=Faults(), sender_class=LslSender, **source_options):  # noqa: F811
    """Trials, report and sent counts of a session played by a fake scanner's outlets (in a
    thread) into an LslSource."""
    name = _name()

    def scanner():
        with sender_class(name, recording.modality, wait_s=10, linger_s=5) as sender:
            return play_session(sender, recording, "s1", 0, None, faults, sender.clock())

    thread = _Thread(scanner)
    thread.start()
    source = LslSource(recording, name=name, sample_rate=8000, tail_s=TAIL, timeout_s=10,
                       **source_options)
    try:
        trials = list(source)
    finally:
        source.close()
    return trials, source.report(), thread.result()


def _assert_same_trials(live, stored):
    assert [t.stimulus for t in live] == [t.stimulus for t in stored]
    for a, b in zip(live, stored):
        np.testing.assert_array_equal(a.frames, b.frames)
        np.testing.assert_array_equal(a.waveform, b.waveform)
        assert (a.index, a.event, a.repeat, a.offset_s, a.onset_s, a.duration_s) == \
            (b.index, b.event, b.repeat, b.offset_s, b.onset_s, b.duration_s)


def test_fake_scanner_over_lsl_gives_the_stored_replays_trials(recording):  # noqa: F811
    stored = list(replay_session(recording, "s1", 0, tail_s=TAIL, sample_rate=8000))
    started = time.monotonic()
    live, report, sent = _live(recording)
    assert report["ended"] and report["bad_messages"] == 0 and report["missing"] == 0
    _assert_same_trials(live, stored)
    assert sent.frames == report["frames"] and sent.events == report["events"] == 8
    assert time.monotonic() - started < 10  # the end marker stops it, not a timeout


def test_injected_drops_jitter_and_duplicates_over_lsl_are_counted(recording):  # noqa: F811
    faults = Faults(jitter_s=0.2, drop=0.05, duplicate=0.05, seed=3)
    live, report, sent = _live(recording, faults)
    assert report["ended"] and len(live) == 8
    assert sent.dropped > 0 and sent.duplicated > 0
    assert report["duplicates"] == sent.duplicated and report["jittered"] == 0
    assert report["frames"] == sent.frames + sent.duplicated
    assert report["missing"] == sum(int(np.isnan(t.frames).all(axis=1).sum()) for t in live) > 0
    assert report["missing"] <= sent.dropped


class _BadMarkers(LslSender):
    """Sends what a careless acquisition might put on its markers stream before each event."""

    BAD = ["{not json", "[1, 2]", '{"stimulus": 99, "duration_s": 1.0}', '{"stimulus": 0}',
           '{"stimulus": 0, "duration_s": true}', b"\xff\xfe"]

    def event(self, onset_s, duration_s, stimulus):
        if stimulus == 0:
            for value in self.BAD:
                self.markers.push_sample([value], self.t0 + onset_s)
        super().event(onset_s, duration_s, stimulus)


def test_bad_markers_are_counted_and_skipped(recording):  # noqa: F811
    stored = list(replay_session(recording, "s1", 0, tail_s=TAIL, sample_rate=8000))
    live, report, _ = _live(recording, sender_class=_BadMarkers)
    assert report["ended"] and report["bad_messages"] == len(_BadMarkers.BAD)
    _assert_same_trials(live, stored)
    reasons = " ".join(report["reasons"])
    assert "a marker is a JSON object" in reasons and "the stimuli are 0-7" in reasons
    assert "KeyError('duration_s')" in reasons and "UnicodeDecodeError" in reasons


def test_a_missing_stream_times_out_in_one_line(recording):  # noqa: F811
    name = _name()
    started = time.monotonic()
    with pytest.raises(LslError, match=f"no LSL stream named '{name}' found within 0.5 s") as err:
        LslSource(recording, name=name, resolve_timeout_s=0.5)
    assert "\n" not in str(err.value) and time.monotonic() - started < 5


def test_a_quiet_stream_times_out_and_releases_what_it_has(recording):  # noqa: F811
    name, done = _name(), threading.Event()

    def scanner():  # a session, a sound at 2 s, frames 0-2, then silence (no end marker)
        with LslSender(name, wait_s=10) as sender:
            sender.session(1.0, N_VOXELS, 1000.0)
            sender.event(2.0, 2.0, 0)
            for k in range(3):
                sender.frame(np.ones(N_VOXELS, np.float32), 1000.0 + k)
            done.wait(10)

    thread = _Thread(scanner)
    thread.start()
    source = LslSource(recording, name=name, tail_s=TAIL, timeout_s=0.5)
    try:
        (trial,) = list(source)
    finally:
        source.close()
        done.set()
    thread.result()
    assert not source.report()["ended"] and trial.frames.shape == (1, N_VOXELS)
    assert trial.onset_s == 2.0 and source.assembler.t0 == 1000.0  # t0 from the stream's desc


def test_plain_pylsl_outlets_as_a_lab_would_write_them(recording):  # noqa: F811
    """Streams built from docs/protocol.md alone: fMRI frames every 2 s without a t0 (the grid
    starts at the first frame), a marker sent before any frame, the end marker."""
    lsl, name = load_pylsl(), _name()
    frames = lsl.StreamOutlet(lsl.StreamInfo(name, "fMRI", N_VOXELS, 0.5, "float32", name))
    markers = lsl.StreamOutlet(lsl.StreamInfo(markers_name(name), "Markers", 1,
                                              lsl.IRREGULAR_RATE, "string", name + "-m"))
    source = LslSource(recording, name=name, tail_s=TAIL, timeout_s=5)  # resolves both now
    try:
        t0 = lsl.local_clock()
        markers.push_sample(['{"stimulus": 5, "duration_s": 3.0}'], t0 + 2.5)
        for k in range(6):
            frames.push_sample(np.full(N_VOXELS, k, np.float32), t0 + 2.0 * k)
        markers.push_sample(['{"end": true}'], t0 + 12.0)
        (trial,) = list(source)
    finally:
        source.close()
    assert source.report()["ended"] and source.report()["bad_messages"] == 0
    # The sound starts 2.5 s in, in frame 1 (2-4 s); 3 s of sound and 3 s of tail: frames 1-3.
    assert trial.stimulus == 5 and trial.frames[:, 0].tolist() == [1.0, 2.0, 3.0]
    assert trial.frame_rate == 0.5 and trial.offset_s == pytest.approx(0.5, abs=1e-6)


def test_without_pylsl_the_lsl_path_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pylsl", None)  # import pylsl now raises ImportError
    with pytest.raises(LslError, match=r"pip install 'cortexreplay\[lsl\]'") as err:
        load_pylsl()
    assert "\n" not in str(err.value)


def test_fake_scanner_command_publishes_a_store_over_lsl(live_store, recording, capsys):  # noqa: F811
    from simulator.cli import main

    name = _name()
    command = _Thread(lambda: main(["fake-scanner", str(live_store), "--lsl", name,
                                    "--speed", "0", "--drop", "0.1", "--seed", "1"]))
    command.start()
    source = LslSource(recording, name=name, tail_s=TAIL, timeout_s=10)
    try:
        trials = list(source)
    finally:
        source.close()
    assert command.result() == 0
    report = source.report()
    assert report["ended"] and len(trials) == 8 and report["missing"] > 0
    assert f"over LSL as '{name}' and '{markers_name(name)}'" in capsys.readouterr().out


def test_fake_scanner_command_takes_one_transport(live_store, capsys):  # noqa: F811
    from simulator.cli import main

    with pytest.raises(SystemExit):
        main(["fake-scanner", str(live_store), "--lsl", "x", "--connect", "tcp://127.0.0.1:1"])
    assert "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fake-scanner", str(live_store)])
    assert "one of the arguments --connect --lsl is required" in capsys.readouterr().err


# -- confinement: no LSL traffic leaves loopback ------------------------------------------


def _own_sockets(table: str) -> list[tuple[tuple[str, int], tuple[str, int], str]]:
    """((local address, port), (remote address, port), state) of this process's sockets in
    /proc/net/TABLE (tcp, udp: IPv4; tcp6, udp6: IPv6 addresses as hex)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])

    def address(field):
        ip, port = field.split(":")
        if len(ip) == 8:  # IPv4, little-endian hex
            ip = ".".join(str(int(ip[i:i + 2], 16)) for i in (6, 4, 2, 0))
        return ip, int(port, 16)

    with open(f"/proc/net/{table}") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return [(address(r[1]), address(r[2]), r[3]) for r in rows if r[9] in inodes]


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="needs Linux's /proc/net")
def test_lsl_sockets_answer_and_connect_on_loopback_only(recording):  # noqa: F811
    """With liblsl's defaults, discovery listens on every interface (and IPv6) and the data
    connection may go through the machine's network address; here neither happens."""
    name, looked = _name(), threading.Event()

    def scanner():
        with LslSender(name, wait_s=10) as sender:
            sender.session(1.0, N_VOXELS, 0.0)
            looked.wait(10)

    thread = _Thread(scanner)
    thread.start()
    source = LslSource(recording, name=name, timeout_s=1)  # its inlets are connected now
    try:
        port = int(re.search(r"<v4data_port>(\d+)<", source.frames.info().as_xml()).group(1))
        tcp, udp = _own_sockets("tcp"), _own_sockets("udp")
        ipv6 = _own_sockets("tcp6") + _own_sockets("udp6")
    finally:
        looked.set()
        source.close()
    thread.result()
    data = [(local, remote) for local, remote, state in tcp
            if state == "01" and port in (local[1], remote[1])]  # 01: established
    assert data and all(a[0] == b[0] == "127.0.0.1" for a, b in data), data
    responders = [local for local, _, _ in udp if local[1] == 16571]  # the multicast port
    assert responders and all(ip == "127.0.0.1" for ip, _ in responders), responders
    assert ipv6 == []
    assert os.environ["LSLAPICFG"] == str(LOOPBACK_CONFIG)  # set by replay.lsl on first use


_STRACED = """
from replay.lsl import LslSender, LslSource
from replay.scanner import play_session
from replay.store import open_recording
import threading
rec = open_recording({store!r})
def scanner():
    with LslSender("strace-lsl", wait_s=10) as sender:
        play_session(sender, rec, "s1", 0, None, t0=sender.clock())
threading.Thread(target=scanner).start()
source = LslSource(rec, name="strace-lsl", timeout_s=5)
print(len(list(source)), source.report()["ended"])
"""


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_no_lsl_packet_is_sent_beyond_loopback(live_store, tmp_path):  # noqa: F811
    """Every address liblsl sends to or connects to, over a whole session, is 127.0.0.1."""
    log = tmp_path / "strace.log"
    script = _STRACED.format(store=str(live_store))
    env = {k: v for k, v in os.environ.items() if k != "LSLAPICFG"}  # the package's own default
    run = subprocess.run(["strace", "-f", "-qq", "-e", "trace=connect,sendto,sendmsg",
                          "-o", str(log), sys.executable, "-c", script],
                         capture_output=True, text=True, timeout=25, env=env)
    assert run.returncode == 0 and run.stdout.split() == ["8", "True"], run.stderr[-2000:]
    calls = [line for line in log.read_text().splitlines() if "AF_INET" in line]
    assert calls, "strace saw no network call"
    addresses = set(re.findall(r'inet_(?:addr|pton)\((?:AF_INET6, )?"([^"]+)"', "\n".join(calls)))
    assert addresses == {"127.0.0.1"}, addresses
    assert not any("AF_INET6" in line for line in calls)
