"""Tests of replay.wire: round trips over real sockets, every validation failure, a mini-fuzz."""

import json
import re
import uuid
from pathlib import Path

import numpy as np
import pytest
import zmq

from replay import wire
from replay.wire import DTYPES, PROTOCOL_VERSION, ProtocolError, decode, encode

DOCS = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
TIMEOUT_MS = 2000


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def _socket(context, kind):
    sock = context.socket(kind)
    sock.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
    sock.setsockopt(zmq.SNDTIMEO, TIMEOUT_MS)
    sock.setsockopt(zmq.LINGER, 0)
    return sock


@pytest.fixture
def pair(ctx):
    address = f"inproc://wire-{uuid.uuid4().hex}"
    a, b = _socket(ctx, zmq.PAIR), _socket(ctx, zmq.PAIR)
    a.bind(address)
    b.connect(address)
    return a, b


def _all_dtype_arrays(rng):
    arrays = {}
    for i, dtype in enumerate(DTYPES):
        shape = (3, i + 1)
        if dtype == "bool":
            arrays[dtype] = rng.random(shape) > 0.5
        elif dtype.startswith("float"):
            arrays[dtype] = rng.standard_normal(shape).astype(dtype)
        else:
            arrays[dtype] = rng.integers(0, 200, size=shape).astype(dtype)
    arrays["scalar"] = np.float64(2.5)
    arrays["empty"] = np.zeros((0, 4), dtype="float32")
    return arrays


def _assert_same(received, sent):
    assert list(received) == list(sent)
    for name, value in sent.items():
        value = np.asarray(value)
        assert received[name].dtype == value.dtype.newbyteorder("<"), name
        assert received[name].shape == value.shape, name
        np.testing.assert_array_equal(received[name], value)


def _valid_frames(n=2, seq=3):
    rng = np.random.default_rng(0)
    arrays = {f"a{i}": rng.standard_normal((2, 3)).astype("float32") for i in range(n)}
    return [bytes(f) if isinstance(f, bytes) else f.tobytes()
            for f in encode("trial", {"run": "r", "trial": 1, "sound": 2}, arrays, seq=seq)]


def _with_header(frames, **changes):
    header = json.loads(frames[1])
    header.update(changes)
    return [frames[0], json.dumps(header).encode(), *frames[2:]]


def test_round_trip_all_dtypes_inproc(pair):
    a, b = pair
    arrays = _all_dtype_arrays(np.random.default_rng(1))
    wire.send(a, "trial", {"run": "r1", "trial": 4, "sound": 9}, arrays, seq=5)
    msg = wire.recv(b)
    assert msg.kind == "trial" and msg.seq == 5
    assert msg.fields == {"run": "r1", "trial": 4, "sound": 9}
    _assert_same(msg.arrays, arrays)
    assert all(not arr.flags.writeable for arr in msg.arrays.values())


def test_big_endian_and_strided_inputs_arrive_little_endian_and_equal(pair):
    a, b = pair
    big = np.arange(12, dtype=">f8").reshape(3, 4)
    strided = np.arange(40, dtype="int32").reshape(5, 8)[:, ::2]
    wire.send(a, "result", arrays={"big": big, "strided": strided})
    msg = wire.recv(b)
    assert msg.arrays["big"].dtype.str == "<f8"
    np.testing.assert_array_equal(msg.arrays["big"], big)
    np.testing.assert_array_equal(msg.arrays["strided"], strided)


def test_round_trip_tcp_dealer_router(ctx):
    router, dealer = _socket(ctx, zmq.ROUTER), _socket(ctx, zmq.DEALER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer.connect(f"tcp://127.0.0.1:{port}")
    arrays = _all_dtype_arrays(np.random.default_rng(2))
    wire.send(dealer, "trial", {"run": "tcp", "trial": 0, "sound": 1}, arrays, seq=1)
    identity, msg = wire.recv_from(router)
    _assert_same(msg.arrays, arrays)
    r = np.array([0.1, 0.2])
    wire.send_to(router, identity, "scores", {"run": "tcp", "trial": 0}, {"trial_r": r}, seq=msg.seq)
    reply = wire.recv(dealer)
    assert reply.kind == "scores" and reply.seq == 1
    np.testing.assert_array_equal(reply.arrays["trial_r"], r)


def test_large_array_round_trips_zero_copy(pair):
    a, b = pair
    frames = np.random.default_rng(3).standard_normal((200, 300)).astype("float32")  # 240 kB
    wire.send(a, "trial", {"run": "r", "trial": 0, "sound": 0}, {"frames": frames})
    msg = wire.recv(b)
    np.testing.assert_array_equal(msg.arrays["frames"], frames)
    assert not msg.arrays["frames"].flags.writeable


def test_send_copies_small_frames_and_not_large_ones():
    class Recorder:
        def __init__(self):
            self.calls = []

        def send(self, data, flags=0, copy=True):
            self.calls.append((flags, copy))

    sock = Recorder()
    small, large = np.zeros(10, "float32"), np.zeros(20000, "float64")  # 40 B and 160 kB
    wire.send(sock, "result", {"run": "r"}, {"small": small, "large": large})
    # topic, header and the 40 B array are copied; the 160 kB array leaves without a copy.
    assert sock.calls == [(zmq.SNDMORE, True)] * 3 + [(0, False)]


def test_router_error_carries_identity(ctx):
    address = f"inproc://wire-{uuid.uuid4().hex}"
    router, dealer = _socket(ctx, zmq.ROUTER), _socket(ctx, zmq.DEALER)
    router.bind(address)
    dealer.setsockopt(zmq.IDENTITY, b"client-7")
    dealer.connect(address)
    dealer.send_multipart([b"trial", b"{not json"])
    with pytest.raises(ProtocolError, match="not valid JSON") as info:
        wire.recv_from(router)
    assert info.value.identity == b"client-7"


def test_recv_times_out_instead_of_hanging(pair):
    _, b = pair
    b.setsockopt(zmq.RCVTIMEO, 50)
    with pytest.raises(zmq.Again):
        wire.recv(b)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda f: [f[0]], r"1 frame\(s\), expected at least 2"),
        (lambda f: f[:-1], r"1 payload frame\(s\) but the header declares 2 array"),
        (lambda f: [*f, b"\0" * 24], r"3 payload frame\(s\) but the header declares 2"),
        (lambda f: [*f[:-1], f[-1][:10]], r"'a1' declares 24 bytes but its frame has 10"),
        (lambda f: [*f[:-1], f[-1] + b"\0\0\0\0"], r"'a1' declares 24 bytes but its frame has 28"),
        (lambda f: [f[0], f[1][:-5], *f[2:]], r"not valid JSON"),
        (lambda f: [f[0], b"{'v': 1}", *f[2:]], r"not valid JSON"),
        (lambda f: [f[0], b'{"v": \xff}', *f[2:]], r"not valid UTF-8"),
        (lambda f: [f[0], b"[1, 2]", *f[2:]], r"must be a JSON object, but got a list"),
        (lambda f: [f[0], b" " * 70000, *f[2:]], r"header has 70000 bytes, at most 65536"),
        (lambda f: [f[0], b'{"v": NaN}', *f[2:]], r"not valid JSON"),
        (lambda f: [b"scores", *f[1:]], r"topic b'scores' does not match the header kind 'trial'"),
        (lambda f: _with_header(f, v=2), r"protocol version\. Allowed value is 1, but got 2"),
        (lambda f: _with_header(f, v="1"), r"protocol version\. .* but got '1'"),
        (lambda f: [b"greeting", *_with_header(f, kind="greeting")[1:]],
         r"Invalid message kind\. .* but got 'greeting'"),
        (lambda f: _with_header(f, seq=-1), r"'seq' must be a non-negative integer"),
        (lambda f: _with_header(f, ts="now"), r"'ts' must be a finite number"),
        (lambda f: _with_header(f, arrays={"a": 1}), r"'arrays' must be a list"),
        (lambda f: _with_header(f, arrays=[{"name": "a0", "dtype": "object", "shape": [2, 3]},
                                           {"name": "a1", "dtype": "float32", "shape": [2, 3]}]),
         r"Invalid dtype for array 'a0'\. Allowed values are 'float32', .* but got 'object'"),
        (lambda f: _with_header(f, arrays=[{"name": "a0", "dtype": "float32", "shape": [-2, -3]},
                                           {"name": "a1", "dtype": "float32", "shape": [2, 3]}]),
         r"must hold non-negative integers, but got \[-2, -3\]"),
        (lambda f: _with_header(f, arrays=[{"name": "a0", "dtype": "float32", "shape": [2**40, 2**40]},
                                           {"name": "a1", "dtype": "float32", "shape": [2, 3]}]),
         r"'a0' declares 4835703278458516698824704 bytes but its frame has 24"),
        (lambda f: _with_header(f, arrays=[{"name": "a0", "dtype": "float32", "shape": [1] * 9},
                                           {"name": "a1", "dtype": "float32", "shape": [2, 3]}]),
         r"at most 8 integers"),
        (lambda f: _with_header(f, arrays=[{"name": "a0", "dtype": "float32", "shape": [2, 3]},
                                           {"name": "a0", "dtype": "float32", "shape": [2, 3]}]),
         r"names must be unique"),
        (lambda f: _with_header(f, arrays=[{"name": "a0", "dtype": "float32"},
                                           {"name": "a1", "dtype": "float32", "shape": [2, 3]}]),
         r"keys 'name', 'dtype' and 'shape'"),
        (lambda f: [f[0], f[1], "text", f[3]], r"frame 2 is not a contiguous bytes-like buffer"),
    ],
)
def test_decode_rejects(mutate, match):
    frames = mutate(_valid_frames())
    with pytest.raises(ProtocolError, match=match):
        decode(frames)


def test_encode_rejects_bad_input():
    kind_message = r"'kind' parameter\. Allowed values are 'open', .* but got 'greeting'"
    with pytest.raises(ProtocolError, match=kind_message):
        encode("greeting")
    with pytest.raises(ProtocolError, match=r"\['seq'\] are reserved"):
        encode("ack", {"seq": 3})
    with pytest.raises(ProtocolError, match=r"Invalid dtype for array 'x'.* but got 'complex128'"):
        encode("result", arrays={"x": np.zeros(3, complex)})
    with pytest.raises(ProtocolError, match="not valid JSON"):
        encode("error", {"reason": float("nan")})
    with pytest.raises(ProtocolError, match="non-negative integer"):
        encode("ack", seq=-1)


def test_encode_accepts_numpy_scalars_in_fields():
    msg = decode(encode("open", {"n_voxels": np.int64(300), "alpha": np.float32(0.5)}))
    assert msg.header["n_voxels"] == 300 and msg.header["alpha"] == 0.5


def _mutations(rng, base):
    """Yield random and mutated frame lists around a valid message."""
    junk = [None, -1, 2**70, 1e308, "x", "float32", [], {}, [[-1]], [3, 2], True, "trial"]
    while True:
        frames = list(base)
        choice = rng.integers(8)
        if choice == 0:  # random bytes everywhere
            frames = [rng.bytes(int(rng.integers(0, 40))) for _ in range(rng.integers(0, 5))]
        elif choice == 1:  # flip bytes of the header
            header = bytearray(frames[1])
            for pos in rng.integers(0, len(header), size=rng.integers(1, 4)):
                header[pos] = rng.integers(256)
            frames[1] = bytes(header)
        elif choice == 2:  # truncate or extend any frame
            i = int(rng.integers(len(frames)))
            cut = rng.integers(0, len(frames[i]) + 1)
            frames[i] = frames[i][:cut] + rng.bytes(int(rng.integers(0, 3)))
        elif choice == 3:  # drop or duplicate a frame
            i = int(rng.integers(len(frames)))
            if rng.random() < 0.5:
                frames = frames[:i] + frames[i + 1:]
            else:
                frames = frames[:i] + [frames[i]] + frames[i:]
        elif choice == 4:  # a header key gets a junk value
            header = json.loads(frames[1])
            header[rng.choice(list(header))] = junk[rng.integers(len(junk))]
            frames[1] = json.dumps(header).encode()
        elif choice == 5:  # an array spec entry gets a junk value
            header = json.loads(frames[1])
            spec = header["arrays"][rng.integers(len(header["arrays"]))]
            spec[rng.choice(["name", "dtype", "shape", "extra"])] = junk[rng.integers(len(junk))]
            frames[1] = json.dumps(header).encode()
        elif choice == 6:  # a shape entry gets a junk value
            header = json.loads(frames[1])
            spec = header["arrays"][rng.integers(len(header["arrays"]))]
            spec["shape"][rng.integers(len(spec["shape"]))] = junk[rng.integers(len(junk))]
            frames[1] = json.dumps(header).encode()
        else:  # deep nesting and odd JSON
            odd = [b"[" * 5000 + b"]" * 5000, b"1" * 5000, b"null", b'"trial"', b"{}"]
            frames[1] = odd[rng.integers(len(odd))]
        yield frames


def test_fuzz_decode_raises_only_protocol_error():
    rng = np.random.default_rng(1234)
    base = _valid_frames()
    accepted = rejected = 0
    for frames, _ in zip(_mutations(rng, base), range(2000)):
        try:
            msg = decode(frames)
        except ProtocolError:
            rejected += 1
        else:
            accepted += 1
            for arr in msg.arrays.values():
                assert arr.nbytes == arr.size * arr.itemsize
    assert rejected > 1000 and accepted > 0


def test_docs_version_matches_code():
    versions = re.findall(r"^Protocol version: (\d+)$", DOCS.read_text(), flags=re.MULTILINE)
    assert versions == [str(PROTOCOL_VERSION)]


def test_docs_example_header_decodes():
    block = re.search(r"```json\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)
    header = json.loads(block.group(1))
    payloads = [np.zeros(spec["shape"], dtype=spec["dtype"]).tobytes() for spec in header["arrays"]]
    msg = decode([header["kind"].encode(), block.group(1).encode(), *payloads])
    assert msg.kind == "trial"
    assert msg.arrays["frames"].shape == (20, 300)
    assert set(msg.fields) == {"run", "trial", "unit"}
