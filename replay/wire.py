"""The ZeroMQ wire protocol: multipart frames carrying a JSON header and raw array buffers.

Every message is one ZeroMQ multipart message::

    frame 0   topic     the kind as ASCII bytes, e.g. b"trial" (equals header["kind"])
    frame 1   header    UTF-8 JSON object, at most 64 kB:
                          "v"      int    PROTOCOL_VERSION (kept apart from the package version)
                          "kind"   str    one of KINDS
                          "seq"    int    sender's sequence number (>= 0); a reply echoes it
                          "ts"     float  sender's unix time in seconds
                          "arrays" list   one {"name": str, "dtype": str, "shape": [int, ...]}
                                          per payload frame, in frame order
                        plus the kind's own fields (docs/protocol.md lists them)
    frame 2+  payload   one raw C-contiguous little-endian buffer per entry of "arrays",
                        exactly prod(shape) * itemsize bytes

A ROUTER socket adds the peer's identity as a frame before the topic; `send_to` and
`recv_from` handle it. Nothing is ever pickled: `decode` checks every length, type and bound
before it calls ``np.frombuffer``, and raises `ProtocolError` (a ValueError) for anything
malformed, so a service can count the error, answer "error" and carry on.

>>> frames = encode("scores", {"run": "demo", "trial": 3}, {"trial_r": np.array([0.25, 0.5])})
>>> msg = decode(frames)
>>> msg.kind, msg.header["trial"], msg.arrays["trial_r"].tolist()
('scores', 3, [0.25, 0.5])
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field

import numpy as np
import zmq

from .checks import allowed_values

PROTOCOL_VERSION = 1
KINDS = ("open", "trial", "scores", "snapshot", "state", "finish", "result", "status", "ack",
         "error", "shutdown", "hello", "progress", "session", "frames", "event", "end")
DTYPES = ("float32", "float64", "int32", "int64", "uint8", "bool")
RESERVED = ("v", "kind", "seq", "ts", "arrays")
MAX_HEADER_BYTES = 65536
MAX_NDIM = 8
# Below this size copying into a new zmq message is cheaper than tracking a zero-copy buffer
# (pyzmq's own COPY_THRESHOLD reasoning).
ZERO_COPY_THRESHOLD = 65536

_SPEC_KEYS = {"name", "dtype", "shape"}


class ProtocolError(ValueError):
    """A message that breaks the wire protocol; the message says what is wrong.

    `recv_from` sets ``identity`` (the ROUTER peer's id, or None) so that a service can still
    answer the sender with an "error" message.

    >>> try:
    ...     decode([b"trial"])
    ... except ProtocolError as err:
    ...     print(err)
    message has 1 frame(s), expected at least 2 (topic, header)
    """

    identity: bytes | None = None
    seq: int | None = None  # the sender's sequence number, when the header held a valid one


@dataclass
class Message:
    """A decoded message: its kind, its whole JSON header and its named arrays.

    The arrays are read-only, zero-copy views of the received frames: a consumer copies
    what it keeps (a kept view also keeps its whole frame in memory).

    >>> msg = decode(encode("ack", {"run": "r1"}, seq=7))
    >>> msg.kind, msg.seq, msg.fields
    ('ack', 7, {'run': 'r1'})
    """

    kind: str
    header: dict
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def seq(self) -> int:
        """The sender's sequence number."""
        return self.header["seq"]

    @property
    def fields(self) -> dict:
        """The kind-specific header fields (the header without the reserved keys)."""
        return {k: v for k, v in self.header.items() if k not in RESERVED}


def _json_default(obj):
    # numpy scalars (np.float32 alpha, np.int64 n_voxels) are common in callers' fields.
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def is_int(x) -> bool:
    """True for a Python int that is not a bool (JSON integers, as decoded)."""
    return isinstance(x, int) and not isinstance(x, bool)


def _wire_array(name, value) -> tuple[dict, np.ndarray]:
    """Return the header entry and the C-contiguous little-endian array for one payload."""
    if not isinstance(name, str) or not name:
        raise ProtocolError(f"array names must be non-empty strings, but got {name!r}")
    array = np.asarray(value)
    if array.dtype.name not in DTYPES:
        allowed = allowed_values(DTYPES)
        raise ProtocolError(
            f"Invalid dtype for array {name!r}. Allowed values are {allowed}, "
            f"but got {array.dtype.name!r} instead."
        )
    if array.ndim > MAX_NDIM:
        raise ProtocolError(f"array {name!r} has {array.ndim} dimensions, at most {MAX_NDIM}")
    # asarray, not ascontiguousarray, which would turn a 0-d array into shape (1,).
    array = np.asarray(array, dtype=array.dtype.newbyteorder("<"), order="C")
    spec = {"name": name, "dtype": array.dtype.name, "shape": list(array.shape)}
    return spec, array


def encode(kind: str, fields: dict | None = None, arrays: dict | None = None, seq: int = 0) -> list:
    """Build the frames of one message.

    Parameters
    ----------
    kind : str
        One of KINDS.
    fields : dict | None
        Kind-specific JSON-serialisable header fields; the reserved keys (RESERVED) are refused.
    arrays : dict[str, array_like] | None
        Named payloads, sent in the dict's order; dtypes must be in DTYPES.
    seq : int
        Sequence number (>= 0).

    Returns
    -------
    frames : list
        ``[topic: bytes, header: bytes, *payloads: np.ndarray]``. A payload that was already
        C-contiguous and little-endian is the caller's own array, not a copy.
    """
    if not isinstance(kind, str) or kind not in KINDS:
        allowed = allowed_values(KINDS)
        raise ProtocolError(
            f"Invalid value for the 'kind' parameter. Allowed values are {allowed}, "
            f"but got {kind!r} instead."
        )
    if not isinstance(seq, (int, np.integer)) or isinstance(seq, bool) or seq < 0:
        raise ProtocolError(f"seq must be a non-negative integer, but got {seq!r}")
    fields = dict(fields or {})
    clash = [k for k in fields if k in RESERVED]
    if clash:
        raise ProtocolError(f"header fields {clash} are reserved and set by encode")
    if not all(isinstance(k, str) for k in fields):
        raise ProtocolError("header field names must be strings")
    specs, payloads = [], []
    for name, value in (arrays or {}).items():
        spec, array = _wire_array(name, value)
        specs.append(spec)
        payloads.append(array)
    header = {"v": PROTOCOL_VERSION, "kind": kind, "seq": int(seq), "ts": time.time(), "arrays": specs}
    header.update(fields)
    try:
        # allow_nan=False: NaN/Infinity are not JSON, and clients in other languages reject them.
        text = json.dumps(header, allow_nan=False, default=_json_default, separators=(",", ":"))
    except (TypeError, ValueError) as err:
        raise ProtocolError(f"header fields are not valid JSON: {err}") from None
    raw = text.encode("utf-8")
    if len(raw) > MAX_HEADER_BYTES:
        raise ProtocolError(f"header has {len(raw)} bytes, at most {MAX_HEADER_BYTES}")
    return [kind.encode("ascii"), raw, *payloads]


def _as_bytes_view(frame, index: int) -> memoryview:
    """A flat byte view of one frame (zmq.Frame, bytes, memoryview or ndarray), no copy."""
    try:
        if isinstance(frame, zmq.Frame):
            frame = frame.buffer
        if isinstance(frame, np.ndarray):
            if not frame.flags.c_contiguous:
                raise ProtocolError(f"frame {index} is not a C-contiguous buffer")
            return memoryview(frame.reshape(-1).view(np.uint8))
        view = memoryview(frame)
        return view if view.format == "B" and view.ndim == 1 else view.cast("B")
    except TypeError:
        raise ProtocolError(
            f"frame {index} is not a contiguous bytes-like buffer, but a {type(frame).__name__}"
        ) from None


def _short(raw: memoryview, limit: int = 40) -> str:
    data = bytes(raw[:limit])
    return repr(data) + ("..." if len(raw) > limit else "")


def _reject_constant(name: str):
    raise ValueError(f"non-standard JSON constant {name}")


def _parse_header(raw: memoryview) -> dict:
    if len(raw) > MAX_HEADER_BYTES:
        raise ProtocolError(f"header has {len(raw)} bytes, at most {MAX_HEADER_BYTES}")
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as err:
        raise ProtocolError(f"header is not valid UTF-8: {err.reason} at byte {err.start}") from None
    try:
        header = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as err:
        # ValueError covers JSONDecodeError and Python's limit on digits of huge integers.
        raise ProtocolError(f"header is not valid JSON: {str(err)[:80]}") from None
    if not isinstance(header, dict):
        raise ProtocolError(f"header must be a JSON object, but got a {type(header).__name__}")
    return header


def _check_envelope(header: dict, topic: memoryview) -> str:
    version = header.get("v")
    if not is_int(version) or version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"Invalid protocol version. Allowed value is {PROTOCOL_VERSION}, "
            f"but got {version!r:.60} instead."
        )
    kind = header.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        allowed = allowed_values(KINDS)
        raise ProtocolError(
            f"Invalid message kind. Allowed values are {allowed}, but got {kind!r:.60} instead."
        )
    if bytes(topic) != kind.encode("ascii"):
        raise ProtocolError(f"topic {_short(topic)} does not match the header kind {kind!r}")
    seq = header.get("seq")
    if not is_int(seq) or seq < 0:
        raise ProtocolError(f"header 'seq' must be a non-negative integer, but got {seq!r:.60}")
    ts = header.get("ts")
    if not (is_int(ts) or isinstance(ts, float) and math.isfinite(ts)):
        raise ProtocolError(f"header 'ts' must be a finite number, but got {ts!r:.60}")
    return kind


def _check_spec(spec, position: int) -> tuple[str, np.dtype, tuple[int, ...], int]:
    """Validate one entry of header["arrays"]; return name, dtype, shape and byte length."""
    if not isinstance(spec, dict) or set(spec) != _SPEC_KEYS:
        raise ProtocolError(
            f"header 'arrays'[{position}] must be an object with keys 'name', 'dtype' and 'shape'"
        )
    name, dtype, shape = spec["name"], spec["dtype"], spec["shape"]
    if not isinstance(name, str) or not name:
        raise ProtocolError(f"header 'arrays'[{position}] name must be a non-empty string")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        allowed = allowed_values(DTYPES)
        raise ProtocolError(
            f"Invalid dtype for array {name!r:.60}. Allowed values are {allowed}, "
            f"but got {dtype!r:.60} instead."
        )
    if not isinstance(shape, list) or len(shape) > MAX_NDIM:
        raise ProtocolError(
            f"shape of array {name!r:.60} must be a list of at most {MAX_NDIM} integers, "
            f"but got {shape!r:.60}"
        )
    if not all(is_int(n) and n >= 0 for n in shape):
        raise ProtocolError(
            f"shape of array {name!r:.60} must hold non-negative integers, but got {shape!r:.60}"
        )
    wire_dtype = np.dtype(dtype).newbyteorder("<")
    # Python ints: a huge declared shape cannot overflow, it just fails the length check...
    nbytes = math.prod(shape) * wire_dtype.itemsize
    # ...unless it is empty (a 0 in it): then numpy's reshape would raise its own ValueError if the
    # other dimensions times the itemsize overflow its index type.
    limit = np.iinfo(np.intp).max
    if nbytes == 0 and math.prod(n for n in shape if n) * wire_dtype.itemsize > limit:
        raise ProtocolError(
            f"shape of array {name!r:.60} must fit numpy's index type (non-zero dimensions times "
            f"the itemsize at most {limit}), but got {shape!r:.60}"
        )
    return name, wire_dtype, tuple(shape), nbytes


def decode(frames) -> Message:
    """Validate the frames of one message and wrap its payloads as arrays.

    Parameters
    ----------
    frames : sequence of bytes-like or zmq.Frame
        ``[topic, header, *payloads]`` without any ROUTER identity.

    Returns
    -------
    message : Message
        Its arrays are read-only zero-copy views of the payload frames (``np.frombuffer``):
        consumers copy what they keep.

    Raises
    ------
    ProtocolError
        For anything malformed; every check runs before any buffer is interpreted.
    """
    try:
        frames = list(frames)
    except TypeError:
        raise ProtocolError(f"frames must be a sequence, but got a {type(frames).__name__}") from None
    if len(frames) < 2:
        raise ProtocolError(
            f"message has {len(frames)} frame(s), expected at least 2 (topic, header)"
        )
    views = [_as_bytes_view(frame, i) for i, frame in enumerate(frames)]
    header = _parse_header(views[1])
    try:
        return _decode_checked(header, views)
    except ProtocolError as err:
        # The rest may be wrong, yet a readable seq lets the reply reach the request it answers.
        seq = header.get("seq")
        err.seq = seq if is_int(seq) and seq >= 0 else None
        raise


def _decode_checked(header: dict, views: list) -> Message:
    kind = _check_envelope(header, views[0])
    specs = header.get("arrays")
    if not isinstance(specs, list):
        raise ProtocolError(f"header 'arrays' must be a list, but got {specs!r:.60}")
    payloads = views[2:]
    if len(payloads) != len(specs):
        raise ProtocolError(
            f"message has {len(payloads)} payload frame(s) "
            f"but the header declares {len(specs)} array(s)"
        )
    checked = [_check_spec(spec, i) for i, spec in enumerate(specs)]
    names = [name for name, *_ in checked]
    if len(set(names)) != len(names):
        raise ProtocolError(f"array names must be unique, but got {names!r:.120}")
    for (name, _, _, nbytes), payload in zip(checked, payloads):
        if len(payload) != nbytes:
            # str() of an int past 4300 digits raises ValueError: name a huge size by a power of 2.
            size = nbytes if nbytes.bit_length() <= 1024 else f"at least 2**{nbytes.bit_length() - 1}"
            raise ProtocolError(
                f"array {name!r:.60} declares {size} bytes but its frame has {len(payload)}"
            )
    arrays = {}
    for (name, dtype, shape, _), payload in zip(checked, payloads):
        array = np.frombuffer(payload, dtype=dtype).reshape(shape)
        array.flags.writeable = False
        arrays[name] = array
    return Message(kind=kind, header=header, arrays=arrays)


def _send_frames(socket, frames: list) -> None:
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        nbytes = frame.nbytes if isinstance(frame, np.ndarray) else len(frame)
        flags = zmq.SNDMORE if i < last else 0
        socket.send(frame, flags=flags, copy=nbytes < ZERO_COPY_THRESHOLD)


def send(socket, kind: str, fields: dict | None = None, arrays: dict | None = None,
         seq: int = 0) -> None:
    """Encode and send one message; payloads of 64 kB or more leave without a copy.

    A zero-copy payload is read by ZeroMQ after this returns: do not modify that array
    until the peer has answered.
    """
    _send_frames(socket, encode(kind, fields, arrays, seq))


def send_to(socket, identity: bytes, kind: str, fields: dict | None = None,
            arrays: dict | None = None, seq: int = 0) -> None:
    """Like `send`, through a ROUTER socket to the peer called ``identity``."""
    frames = encode(kind, fields, arrays, seq)
    _send_frames(socket, [bytes(identity), *frames])


def recv(socket, flags: int = 0) -> Message:
    """Receive and decode one message (frames kept as zero-copy buffers)."""
    return decode(socket.recv_multipart(flags=flags, copy=False))


def recv_from(socket, flags: int = 0) -> tuple[bytes, Message]:
    """Receive one message on a ROUTER socket; return the sender's identity and the message.

    A `ProtocolError` raised here carries the sender in ``err.identity`` so the service can
    answer with an "error" message.
    """
    frames = socket.recv_multipart(flags=flags, copy=False)
    identity = frames[0].bytes if frames else None
    try:
        return identity, decode(frames[1:])
    except ProtocolError as err:
        err.identity = identity
        raise
