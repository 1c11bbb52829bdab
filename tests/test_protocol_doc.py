"""docs/protocol.md is a complete specification: a client written from it alone talks to the service.

Every ```json block of the document is an example header. The frames are built here from the
document's rules only (topic = the kind in ASCII, header = the JSON text in UTF-8, one payload per
`arrays` entry of prod(shape) x itemsize little-endian C-order bytes, with the itemsizes read from
the document's dtype table), never with replay.wire.encode, and must decode. Then the document's
conversation (its examples in `seq` order) is played over a raw DEALER socket against a real
EncoderService, and every reply must have the kind, fields and arrays the document shows.
"""
import json
import math
import re
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
import zmq

from encoders.service import EncoderService
from replay import wire

pytestmark = pytest.mark.timeout(60)

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
TEXT = DOC.read_text(encoding="utf-8")
RUN = "continuous/sub-01/seed-0"
TIMEOUT_MS = 5000


# -- reading the document -----------------------------------------------------------------


def _examples():
    """[(heading of the section it is in, header dict, JSON text)] for every ```json block."""
    out, heading, block = [], None, None
    for line in TEXT.splitlines():
        if block is not None:
            if line.startswith("```"):
                text = "\n".join(block)
                out.append((heading, json.loads(text), text))
                block = None
            else:
                block.append(line)
        elif line.startswith("```json"):
            block = []
        elif line.startswith("#"):
            heading = line.lstrip("#").strip()
    assert block is None, "an unclosed ```json block"
    return out


def _sections(own: bool = False):
    """{heading: its text up to the next heading of the same or a higher level (of any level,
    with ``own``: the text before its first subsection)}."""
    out = {}
    matches = list(re.finditer(r"^(#{2,3}) (.+)$", TEXT, flags=re.MULTILINE))
    for i, m in enumerate(matches):
        end = len(TEXT)
        for later in matches[i + 1:]:
            if own or len(later.group(1)) <= len(m.group(1)):
                end = later.start()
                break
        out[m.group(2).strip()] = TEXT[m.end():end]
    return out


def _table_rows(section: str):
    """The body rows of the markdown tables of one section, as lists of stripped cells."""
    rows = []
    for line in _sections(own=True)[section].splitlines():
        line = line.strip()
        if line.startswith("|") and not re.match(r"^\|[\s\-|]+\|$", line):
            rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def _kinds_table():
    """{kind: (sent by, reply kind or None)} from the table of the "Kinds" section."""
    table = {}
    for cells in _table_rows("Kinds"):
        m = re.fullmatch(r"`(\w+)`", cells[0])
        if m:
            reply = re.match(r"`(\w+)`", cells[-1])
            table[m.group(1)] = (cells[1], reply.group(1) if reply else None)
    return table


def _itemsizes():
    """{dtype: bytes per value} from the document's dtype table (in "Arrays")."""
    sizes = {}
    for cells in _table_rows("Arrays"):
        m = re.fullmatch(r"`(\w+)`", cells[0])
        if m and len(cells) >= 2 and cells[1].isdigit():
            sizes[m.group(1)] = int(cells[1])
    return sizes


EXAMPLES = _examples()
ITEMSIZE = _itemsizes()


def _example(kind: str, seq: int) -> dict:
    found = [h for _, h, _ in EXAMPLES if h["kind"] == kind and h["seq"] == seq]
    assert len(found) == 1, f"the document should have one {kind!r} example with seq {seq}"
    return found[0]


# -- a client written from the document ---------------------------------------------------


def _payload(spec: dict, array: np.ndarray | None = None) -> bytes:
    """The payload of one `arrays` entry: zeros of its dtype and shape, or ``array``'s values,
    as little-endian C-order bytes of exactly prod(shape) * itemsize bytes."""
    dtype = np.dtype(spec["dtype"]).newbyteorder("<")
    if array is None:
        array = np.zeros(spec["shape"], dtype=dtype)
    raw = np.ascontiguousarray(array, dtype=dtype).tobytes(order="C")
    assert len(raw) == math.prod(spec["shape"]) * ITEMSIZE[spec["dtype"]]
    return raw


def _frames(header, payloads: dict | None = None) -> list[bytes]:
    """[topic, header, *payloads] for a header (a dict, or the example's JSON text as it is)."""
    text = header if isinstance(header, str) else json.dumps(header)
    parsed = json.loads(text)
    payloads = payloads or {}
    return [parsed["kind"].encode("ascii"), text.encode("utf-8"),
            *(payloads[s["name"]] if isinstance(payloads.get(s["name"]), bytes)
              else _payload(s, payloads.get(s["name"])) for s in parsed["arrays"])]


def _specs(msg: wire.Message) -> list[dict]:
    return [{"name": n, "dtype": a.dtype.name, "shape": list(a.shape)} for n, a in msg.arrays.items()]


# -- the document's structure -------------------------------------------------------------


def test_every_kind_has_a_subsection_a_table_row_and_an_example():
    sections, table = _sections(), _kinds_table()
    assert set(table) == set(wire.KINDS)
    for kind in wire.KINDS:
        assert f"`{kind}`" in sections, f"no '### `{kind}`' subsection"
        in_section = [h for heading, h, _ in EXAMPLES if heading == f"`{kind}`" and h["kind"] == kind]
        assert in_section, f"the `{kind}` subsection has no example of its kind"
    for kind, (sent_by, reply) in table.items():
        assert sent_by in ("client", "service", "acquisition")
        assert (reply is not None) == (sent_by == "client"), kind  # PUSH/PULL has no replies
        assert reply is None or table[reply][0] == "service"


def test_the_document_lists_the_codes_dtypes_and_reserved_keys():
    assert set(ITEMSIZE) == set(wire.DTYPES)
    assert all(ITEMSIZE[d] == np.dtype(d).itemsize for d in wire.DTYPES)
    reserved = {re.fullmatch(r"`(\w+)`", cells[0]).group(1) for cells in _table_rows("Header")
                if re.fullmatch(r"`(\w+)`", cells[0])}
    assert reserved == set(wire.RESERVED)
    assert str(wire.MAX_HEADER_BYTES) in _sections()["Frames"]


@pytest.mark.parametrize("index", range(len(EXAMPLES)),
                         ids=[f"{h['kind']}-{h['seq']}" for _, h, _ in EXAMPLES])
def test_an_example_header_builds_frames_that_decode(index):
    _, header, text = EXAMPLES[index]
    assert isinstance(header, dict) and set(wire.RESERVED) <= set(header)
    assert header["v"] == wire.PROTOCOL_VERSION and header["kind"] in wire.KINDS
    frames = _frames(text)
    assert len(frames) == 2 + len(header["arrays"])
    msg = wire.decode(frames)
    assert msg.kind == header["kind"] and msg.header == header
    assert _specs(msg) == header["arrays"]
    assert all(not a.any() for a in msg.arrays.values())


def test_examples_are_one_conversation_without_repeats():
    keys = [(h["kind"], h["seq"]) for _, h, _ in EXAMPLES]
    assert len(keys) == len(set(keys))
    assert {h["run"] for _, h, _ in EXAMPLES if "run" in h} == {RUN}


# -- the document's conversation against a real service -------------------------------------


class _Served:
    def __init__(self):
        self.context = zmq.Context()
        name = uuid.uuid4().hex
        self.service = EncoderService(f"inproc://doc-{name}", context=self.context,
                                      monitor=f"inproc://doc-monitor-{name}")
        self.thread = threading.Thread(target=self.service.serve_forever, daemon=True)
        self.thread.start()

    def socket(self, kind, endpoint):
        sock = self.context.socket(kind)
        sock.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
        sock.setsockopt(zmq.LINGER, 0)
        if kind == zmq.SUB:
            sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(endpoint)
        return sock


@pytest.fixture
def served():
    s = _Served()
    yield s
    if s.thread.is_alive():  # a test that failed before its shutdown: stop the service cleanly
        sock = s.socket(zmq.DEALER, s.service.endpoint)
        sock.send_multipart(wire.encode("shutdown"))
        sock.poll(TIMEOUT_MS)
        sock.close()
    s.thread.join(5)
    s.context.destroy(linger=0)


def _check(reply: wire.Message, example: dict, seq: int | None = None):
    """The reply has the example's kind, fields and arrays, and its values (but ts, reason)."""
    header = reply.header
    assert reply.kind == example["kind"], header.get("reason")
    assert set(header) == set(example), (reply.kind, sorted(header), sorted(example))
    assert header["v"] == wire.PROTOCOL_VERSION
    assert header["seq"] == (example["seq"] if seq is None else seq)
    for key in set(example) - {"v", "seq", "ts", "arrays", "reason", "state"}:
        assert header[key] == example[key], (reply.kind, key)
    if "reason" in example:
        assert isinstance(header["reason"], str) and header["reason"]
    if reply.kind == "state":  # the document's example is abridged: a part of the real one
        assert all(spec in _specs(reply) for spec in example["arrays"])
        assert all(name.startswith("state/") for name in reply.arrays)
        assert example["state"].items() <= header["state"].items()
    else:
        assert _specs(reply) == example["arrays"]


def _nan_frames(spec):
    frames = np.zeros(spec["shape"], dtype="<f4")
    frames[4:7] = np.nan  # the document: "NaN in its frames 4, 5 and 6"
    return frames


def test_the_documents_conversation_with_a_real_service(served):
    table = _kinds_table()
    sub = served.socket(zmq.SUB, served.service.monitor_endpoint)
    hello = wire.recv(sub)  # subscribed before the conversation began
    _check(hello, _example("hello", 1))
    sock = served.socket(zmq.DEALER, served.service.endpoint)
    first_trial = EXAMPLES[0][1]
    assert first_trial["kind"] == "trial" and first_trial["seq"] == 2

    def ask(header, payloads=None, expect=None, seq=None):
        sock.send_multipart(_frames(header, payloads))
        reply = wire.recv(sock)
        kind = table[json.loads(header)["kind"] if isinstance(header, str) else header["kind"]][1]
        assert reply.kind == (expect or kind), reply.header.get("reason")
        return reply

    # seq 1: open -> ack; seq 2, 3: trials 0 and 1, pipelined (both sent, then both read).
    _check(ask(_example("open", 1)), _example("ack", 1))
    sock.send_multipart(_frames(first_trial))
    sock.send_multipart(_frames(_example("trial", 3)))
    second, third = wire.recv(sock), wire.recv(sock)
    scores = _example("scores", 3)
    _check(second, {**scores, "seq": 2, "trial": 0})
    _check(third, scores)
    # seq 4: trial 1 again: answered again with the same scores, applied once.
    again = ask({**_example("trial", 3), "seq": 4})
    _check(again, scores, seq=4)
    np.testing.assert_array_equal(again.arrays["trial_r"], third.arrays["trial_r"])
    # seq 5: trial 3, a gap -> error.
    _check(ask({**_example("trial", 3), "seq": 5, "trial": 3}, expect="error"), _example("error", 5))
    # seq 6: snapshot -> state; the document says how big the real one is.
    state = ask(_example("snapshot", 6))
    _check(state, _example("state", 6))
    m = re.search(r"holds (\d+) scalars and (\d+) arrays", _sections()["`state`"])
    assert (len(state.header["state"]), len(state.arrays)) == (int(m.group(1)), int(m.group(2)))
    # seq 7: open with the state as received -> ack with the checkpoint's trial.
    restore = {**_example("open", 7), "state": state.header["state"],
               "arrays": state.header["arrays"]}
    _check(ask(restore, {n: a.tobytes() for n, a in state.arrays.items()}), _example("ack", 7))
    # seq 8: trial 2 with three non-finite frames -> dropped and counted.
    example = _example("trial", 8)
    frames_spec = next(s for s in example["arrays"] if s["name"] == "frames")
    _check(ask(example, {"frames": _nan_frames(frames_spec)}), _example("scores", 8))
    # seq 9: status -> ack with the counters the document shows.
    _check(ask(_example("status", 9)), _example("ack", 9))
    # seq 10: a trial whose frames payload lost 4 bytes -> error, its readable seq echoed.
    broken = _frames({**_example("trial", 3), "seq": 10})
    broken[2] = broken[2][:-4]
    sock.send_multipart(broken)
    _check(wire.recv(sock), _example("error", 10))
    # seq 11: finish -> result.
    _check(ask(_example("finish", 11)), _example("result", 11))
    # The monitor saw each applied trial once, numbered on from its hello.
    progress = [wire.recv(sub) for _ in range(3)]
    assert [p.seq for p in progress] == [2, 3, 4]
    assert [(p.header["trial"], p.header["dropped_frames"]) for p in progress] == [(0, 0), (1, 0), (2, 3)]
    _check(progress[0], _example("progress", 2))
    # A kind the service sends is refused when a client sends it; the service carries on.
    for i, kind in enumerate(k for k, (by, _) in table.items() if by == "service"):
        example = next(h for _, h, _ in EXAMPLES if h["kind"] == kind)
        reply = ask({**example, "seq": 100 + i}, expect="error")
        assert reply.seq == 100 + i and reply.header["errors"] == 3 + i
    # seq 12: shutdown -> ack, and the service stops.
    _check(ask(_example("shutdown", 12)), _example("ack", 12))
    served.thread.join(5)
    assert not served.thread.is_alive()
    sock.close()
    sub.close()


def test_the_documents_acquisition_stream_gives_a_zmq_source_its_trial(tmp_path):
    """The Acquisition examples, sent as the document builds them, make a live trial."""
    from replay.live import ZmqSource
    from replay.store import RecordingWriter, open_recording

    with RecordingWriter(tmp_path / "rec.zarr") as w:
        w.write_stimuli([np.ones(16000, np.float32)] * 8, sample_rate=16000)
    examples = {h["kind"]: h for heading, h, _ in EXAMPLES
                if h["kind"] in ("session", "frames", "event", "end")}
    context = zmq.Context()
    source = ZmqSource("inproc://doc-acquisition", open_recording(tmp_path / "rec.zarr"),
                       tail_s=1.0, timeout_s=5, context=context)
    push = context.socket(zmq.PUSH)
    push.connect(source.endpoint)
    n_voxels = examples["session"]["n_voxels"]
    try:
        push.send_multipart(_frames(examples["session"]))
        push.send_multipart(_frames(examples["event"]))
        for k in range(4):  # frames 0-3 of the example's shape, at t0 + k seconds
            header = {**examples["frames"], "seq": 3 + k}
            frame = np.full((1, n_voxels), k, np.float32)
            push.send_multipart(_frames(header, {"frames": frame.tobytes(), "timestamps":
                                                 np.array([examples["session"]["t0"] + k]).tobytes()}))
        push.send_multipart(_frames(examples["end"]))
        trials = list(source)
    finally:
        push.close(linger=0)
        source.close()
        context.term()
    assert source.report()["bad_messages"] == 0 and source.report()["ended"]
    (trial,) = trials
    assert trial.stimulus == examples["event"]["stimulus"]
    assert trial.frames[:, 0].tolist() == [1.0, 2.0]  # from the onset (1 s): 1 s of sound, 1 s tail


def test_the_documents_python_bridge_makes_the_trial_it_describes(tmp_path):
    """The 'A bridge in Python' example, run as written against a ZmqSource."""
    from replay.store import RecordingWriter, open_recording

    from test_live import _receive  # a ZmqSource fed by a sender in a thread (tail 3 s)

    (code,) = re.findall(r"### A bridge in Python.*?```python\n(.*?)```", TEXT, flags=re.DOTALL)
    with RecordingWriter(tmp_path / "rec.zarr") as w:
        w.write_stimuli([np.ones(16000, np.float32)] * 8, sample_rate=16000)
    trials, report = _receive(open_recording(tmp_path / "rec.zarr"), "tcp://127.0.0.1:*",
                              lambda endpoint, context: exec(code, {"ENDPOINT": endpoint}))
    assert report["bad_messages"] == 0 and report["ended"]
    (trial,) = trials
    # The event's 2 s of sound and 3 s of tail: frames 2-6 of the 10 sent, none missing.
    assert trial.stimulus == 5 and trial.frames.shape == (5, 300) and report["missing"] == 0
    expected = np.random.default_rng(2).standard_normal((1, 300)).astype(np.float32)
    np.testing.assert_array_equal(trial.frames[0], expected[0])
