"""The bad messages of the decoder fuzzing (`bench.fuzz`): valid seeds, labelled mutations, and
whether each result is certain to be refused.

Each message is a valid ``open``, ``trial`` or ``finish`` (made by `replay.wire.encode`) broken
by one labelled mutation (`MUTATIONS`), or random frames. It counts as bad only when it is certain
to be refused: `replay.wire.decode` rejects it (the service runs the same decoder on the same
bytes), or its class breaks a rule of the service by construction (a trial for a run never
opened). A wire mutation that still decodes (a bit flip in a digit of ``ts``) may be a valid
request: `Case.bad` is False and the driver never sends it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

import numpy as np

from replay import wire

RUN = "fuzz"  # the open run that bad trials and finishes aim at
OTHER_RUN = "fuzz-open"  # the run bad opens name (a valid one would not replace RUN)
OPEN = {"layers": ["a", "b"], "n_voxels": 5, "n_units": 4, "lags": [0, 1, 2],
        "alphas": [0.5, 2.0, 50.0], "warmup": 2}
N_FEATURES = {"a": 3, "b": 4}
N_FRAMES = 9
WARMUP_TRIALS = 3  # valid trials of RUN before the fuzz: they fix each layer's number of features
REPLY_KINDS = ("scores", "result", "ack", "error")  # kinds only the service sends
TS = 1_700_000_000.25  # the 'ts' of every message


# -- valid seeds -------------------------------------------------------------------------------

def valid_trial(rng) -> tuple[int, dict, np.ndarray]:
    """``(unit, features, frames)`` of one random valid trial of RUN (float32)."""
    features = {name: rng.standard_normal((N_FRAMES, n)).astype(np.float32)
                for name, n in N_FEATURES.items()}
    frames = rng.standard_normal((N_FRAMES, OPEN["n_voxels"])).astype(np.float32)
    return int(rng.integers(OPEN["n_units"])), features, frames


def _encode(kind, fields=None, arrays=None) -> list[bytes]:
    """`wire.encode`'s frames as bytes, with a fixed 'ts' so that a seed gives the same bytes."""
    topic, header, *payloads = wire.encode(kind, fields, arrays, seq=1)
    header = json.dumps({**json.loads(header), "ts": TS}, separators=(",", ":")).encode()
    return [topic, header, *(p.tobytes() for p in payloads)]


def _trial(rng, index, run=RUN, drop=(), **changes) -> list[bytes]:
    """Trial ``index`` of ``run``; ``changes`` replace fields or arrays (``frames``,
    ``features/a``), ``drop`` names those left out."""
    unit, features, frames = valid_trial(rng)
    fields = {"run": run, "trial": index, "unit": unit}
    arrays = {"frames": frames, **{f"features/{k}": v for k, v in features.items()}}
    for name, value in changes.items():
        (arrays if name in arrays else fields)[name] = value
    return _encode("trial", {k: v for k, v in fields.items() if k not in drop},
                   {k: v for k, v in arrays.items() if k not in drop})


def _seed(rng, trial, payloads=False) -> list[bytes]:
    """A valid open (of OTHER_RUN), trial (RUN's next) or finish (of RUN); a trial if
    ``payloads`` (the only one that has any)."""
    which = 1 if payloads else rng.integers(3)
    if which == 0:
        return _encode("open", {"run": OTHER_RUN, **OPEN})
    return _trial(rng, trial) if which == 1 else _encode("finish", {"run": RUN})


def _pick(rng, options):
    return options[rng.integers(len(options))]


def _bytes(rng, low=0, high=64) -> bytes:
    return rng.integers(0, 256, int(rng.integers(low, high + 1)), dtype=np.uint8).tobytes()


def _header(frames) -> dict:
    return json.loads(frames[1])


def _with_header(frames, header, text=None) -> list[bytes]:
    """``frames`` with a new header: ``header`` as JSON, then the literal ``text`` put in place of
    the string "@" (for what json.dumps cannot write: NaN, 1e400, huge numbers)."""
    raw = json.dumps(header, ensure_ascii=False, separators=(",", ":"))
    if text is not None:
        raw = raw.replace('"@"', text, 1)
    return [frames[0], raw.encode("utf-8"), *frames[2:]]


def _set_field(rng, frames, value, text=None) -> list[bytes]:
    """Replace one random header field (reserved or not) by ``value``."""
    header = _header(frames)
    header[_pick(rng, sorted(header))] = value
    return _with_header(frames, header, text)


def _set_spec(rng, frames, key, value) -> list[bytes]:
    """Set ``key`` of one random entry of a trial's header 'arrays'."""
    header = _header(frames)
    spec = header["arrays"][rng.integers(len(header["arrays"]))]
    spec[key] = value
    return _with_header(frames, header)


# -- mutation classes --------------------------------------------------------------------------

@dataclass(frozen=True)
class Mutation:
    """One labelled way to break a message: ``make(rng, next_trial)`` returns its frames.

    ``service`` classes decode but break a rule of the service by construction; the others are
    refused by the decoder or not sent at all.
    """

    name: str
    make: Callable
    service: bool
    doc: str


MUTATIONS: dict[str, Mutation] = {}


def _mutation(name, service=False):
    def register(make):
        MUTATIONS[name] = Mutation(name, make, service, (make.__doc__ or "").strip())
        return make
    return register


@_mutation("frames.dropped")
def _dropped(rng, t):
    """The header, a payload, or all frames but the topic left out."""
    frames = _seed(rng, t, payloads=rng.random() < 0.7)
    how = rng.integers(3)
    if how == 0:
        return frames[:1]
    drop = 1 if how == 1 or len(frames) == 2 else int(rng.integers(2, len(frames)))
    return frames[:drop] + frames[drop + 1:]


@_mutation("frames.extra")
def _extra(rng, t):
    """1-3 frames of random bytes inserted, mostly after the header."""
    frames = _seed(rng, t)
    for _ in range(rng.integers(1, 4)):
        at = int(rng.integers(2, len(frames) + 1)) if rng.random() < 0.8 else int(rng.integers(2))
        frames.insert(at, _bytes(rng))
    return frames


@_mutation("header.truncated")
def _truncated(rng, t):
    """The header frame cut short."""
    frames = _seed(rng, t)
    frames[1] = frames[1][:rng.integers(len(frames[1]))]
    return frames


@_mutation("payload.length")
def _payload_length(rng, t):
    """One payload shortened or extended (byte length unlike the declared shape's)."""
    frames = _seed(rng, t, payloads=True)
    i = int(rng.integers(2, len(frames)))
    if rng.random() < 0.5:
        frames[i] = frames[i][:rng.integers(len(frames[i]))]
    else:
        frames[i] += _bytes(rng, 1, 64)
    return frames


@_mutation("dtype.unknown")
def _dtype_unknown(rng, t):
    """A dtype outside the allow-list, or not a string."""
    bad = ["float16", "complex64", "<f4", ">f4", "f4", "float", "object", "O", "U8", "int8",
           "uint64", "datetime64", "", "FLOAT32", "float32 ", " float32", None, 32, 4.0, True,
           ["float32"], {"dtype": "float32"}]
    return _set_spec(rng, _seed(rng, t, payloads=True), "dtype",
                     _pick(rng, [d for d in bad if d not in wire.DTYPES]))


@_mutation("dtype.mismatch")
def _dtype_mismatch(rng, t):
    """An allowed dtype or a shape that does not fit the payload's byte length."""
    frames = _seed(rng, t, payloads=True)
    header = _header(frames)
    i = int(rng.integers(len(header["arrays"])))
    spec, nbytes = header["arrays"][i], len(frames[2 + i])
    while True:
        dtype = _pick(rng, wire.DTYPES) if rng.random() < 0.5 else spec["dtype"]
        shape = list(spec["shape"])
        if rng.random() < 0.6 or dtype == spec["dtype"]:
            j = int(rng.integers(len(shape)))
            shape[j] = max(0, shape[j] + int(rng.integers(-3, 4)))
        if np.prod(shape, dtype=object) * np.dtype(dtype).itemsize != nbytes:
            break
    spec["dtype"], spec["shape"] = dtype, shape
    return _with_header(frames, header)


@_mutation("shape.values")
def _shape_values(rng, t):
    """A shape entry negative, a float, a bool, a string, null or a list; or no list at all."""
    frames = _seed(rng, t, payloads=True)
    if rng.random() < 0.2:
        return _set_spec(rng, frames, "shape", _pick(rng, ["9,5", 45, None, {"0": 9}, True]))
    header = _header(frames)
    spec = header["arrays"][rng.integers(len(header["arrays"]))]
    bad = [-1, -9, -2**63, 9.0, 2.5, 1e3, True, False, "9", None, [9], {}]
    spec["shape"][rng.integers(len(spec["shape"]))] = _pick(rng, bad)
    return _with_header(frames, header)


@_mutation("shape.huge")
def _shape_huge(rng, t):
    """Huge declared sizes: [2**62, 2**62], dims past 2**63, 4000-digit dims, some with a 0."""
    fixed = [[2**62, 2**62], [2**63], [2**64, 1], [10**30, 10**30], [2**31] * 8,
             [0, 2**62, 2**62], [0, 2**63], [2**62, 0, 2**62], [0, 2**61, 2], [10**4000, 10**4000],
             [0, 10**4000]]
    shape = _pick(rng, fixed)
    if rng.random() < 0.5:
        shape = [2 ** int(rng.integers(20, 70)) for _ in range(rng.integers(1, 9))]
        if rng.random() < 0.5:
            shape[rng.integers(len(shape))] = 0
    return _set_spec(rng, _seed(rng, t, payloads=True), "shape", shape)


@_mutation("shape.ndim")
def _shape_ndim(rng, t):
    """More than 8 dimensions (ones, so that only the count is wrong)."""
    frames = _seed(rng, t, payloads=True)
    header = _header(frames)
    spec = header["arrays"][rng.integers(len(header["arrays"]))]
    spec["shape"] = [1] * int(rng.integers(wire.MAX_NDIM + 1 - len(spec["shape"]), 40)) \
        + spec["shape"]
    return _with_header(frames, header)


@_mutation("version")
def _version(rng, t):
    """An unknown protocol version 'v', one of another type, or none."""
    frames = _seed(rng, t)
    header = _header(frames)
    v = wire.PROTOCOL_VERSION
    bad = [v + 1, v - 1, v + 98, -v, 2**70, str(v), f"v{v}", float(v), v + 0.5, True, None, [v],
           {"v": v}]
    if rng.random() < 0.1:
        del header["v"]
    else:
        header["v"] = _pick(rng, bad)
    return _with_header(frames, header)


@_mutation("kind.unknown")
def _kind_unknown(rng, t):
    """A header kind outside KINDS (its topic matching it), of another type, or none."""
    frames = _seed(rng, t)
    header = _header(frames)
    letters = "abcdefghijklmnopqrstuvwxyz"
    bad = ["trail", "Trial", "TRIAL", "open ", " open", "", "trial\x00", "opn", "shutdown!", "é",
           "".join(_pick(rng, letters) for _ in range(rng.integers(1, 12))), None, 1, ["trial"], {}]
    kind = _pick(rng, [k for k in bad if k not in wire.KINDS])
    if rng.random() < 0.1:
        del header["kind"]
    else:
        header["kind"] = kind
    topic = kind.encode("utf-8") if isinstance(kind, str) else frames[0]
    return _with_header([topic, *frames[1:]], header)


@_mutation("kind.topic")
def _kind_topic(rng, t):
    """A valid kind whose topic frame says something else."""
    frames = _seed(rng, t)
    topic = frames[0]
    other = [k.encode() for k in wire.KINDS if k.encode() != topic]
    frames[0] = _pick(rng, [_pick(rng, other), topic.upper(), topic + b"\x00", b"", topic[:-1],
                            b" " + topic, _bytes(rng, 1, 16)])
    return frames


@_mutation("json.not_object")
def _not_object(rng, t):
    """A header that is JSON but not an object."""
    frames = _seed(rng, t)
    value = _pick(rng, [[1, 2], 1, 1.5, "trial", None, True, False, [], [_header(frames)]])
    return [frames[0], json.dumps(value).encode(), *frames[2:]]


@_mutation("utf8.invalid")
def _utf8(rng, t):
    """An invalid UTF-8 sequence put into the header."""
    frames = _seed(rng, t)
    bad = [b"\xff", b"\xfe", b"\x80", b"\xbf", b"\xc0\x80", b"\xc1\xbf", b"\xc3", b"\xe2\x82",
           b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80", b"\xef\xbf"]
    at = int(rng.integers(len(frames[1]) + 1))
    frames[1] = frames[1][:at] + _pick(rng, bad) + frames[1][at + int(rng.integers(2)):]
    return frames


@_mutation("json.invalid")
def _json_invalid(rng, t):
    """A header that is not JSON: a structural character gone, single quotes, a trailing comma,
    garbage after it, a byte-order mark, a raw control character, nothing."""
    frames = _seed(rng, t)
    raw = frames[1]
    how = rng.integers(7)
    if how == 0:
        spots = [i for i, c in enumerate(raw) if c in b'{}[]:,"']
        i = _pick(rng, spots)
        raw = raw[:i] + raw[i + 1:]
    elif how == 1:
        raw = raw.replace(b'"', b"'")
    elif how == 2:
        raw = raw[:-1] + b",}"
    elif how == 3:
        raw += _pick(rng, [b"}", b"x", b"{}", b" \x00", b",", b"]"])
    elif how == 4:
        raw = b"\xef\xbb\xbf" + raw
    elif how == 5:
        raw = raw.replace(b'"kind":"', b'"kind":"\x01', 1)
    else:
        raw = _pick(rng, [b"", b" ", b"{", b"}", b"null null", b"{}{}", b"/* */ {}"])
    return [frames[0], raw, *frames[2:]]


@_mutation("json.nan")
def _nan(rng, t):
    """NaN, Infinity or -Infinity (not JSON) in a header field."""
    return _set_field(rng, _seed(rng, t), "@", _pick(rng, ["NaN", "Infinity", "-Infinity"]))


@_mutation("header.oversized")
def _oversized(rng, t):
    """A header over 64 kB (valid JSON otherwise)."""
    frames = _seed(rng, t)
    header = _header(frames)
    extra = int(rng.integers(0, 2000)) if rng.random() < 0.8 else int(rng.integers(0, 200_000))
    header["pad"] = "x" * (wire.MAX_HEADER_BYTES - len(frames[1]) + extra)
    return _with_header(frames, header)


@_mutation("frames.random")
def _random_frames(rng, t):
    """The topic or the header (or both) replaced by random bytes."""
    frames = _seed(rng, t)
    for i in _pick(rng, [[0], [1], [0, 1]]):
        frames[i] = _bytes(rng, 0, 300)
    return frames


@_mutation("arrays.duplicate")
def _duplicate(rng, t):
    """Two arrays of one name: one entry and its payload repeated, or one renamed as another."""
    frames = _seed(rng, t, payloads=True)
    header = _header(frames)
    specs = header["arrays"]
    i, j = (int(k) for k in rng.choice(len(specs), 2, replace=False))
    if rng.random() < 0.5:
        specs.append(dict(specs[i]))
        frames.append(frames[2 + i])
    else:
        specs[j]["name"] = specs[i]["name"]
    return _with_header(frames, header)


@_mutation("header.bitflip")
def _bitflip(rng, t):
    """1-8 random bit flips in the header (those that still decode are skipped)."""
    frames = _seed(rng, t)
    raw = bytearray(frames[1])
    for _ in range(rng.integers(1, 9)):
        raw[rng.integers(len(raw))] ^= 1 << int(rng.integers(8))
    frames[1] = bytes(raw)
    return frames


@_mutation("envelope.seq_ts")
def _seq_ts(rng, t):
    """'seq' or 'ts' of the wrong type, negative, infinite, or missing."""
    frames = _seed(rng, t)
    header = _header(frames)
    text = None
    if rng.random() < 0.5:
        key, bad = "seq", [-1, -2**70, "1", 1.5, 1.0, None, True, [1], {}]
    else:
        key, bad = "ts", ["now", "1e9", None, True, [0], {}, "@"]
    if rng.random() < 0.15:
        del header[key]
    else:
        header[key] = _pick(rng, bad)
        text = _pick(rng, ["1e400", "-1e400"])
    return _with_header(frames, header, text)


@_mutation("arrays.field")
def _arrays_field(rng, t):
    """'arrays' not a list, an entry not an object, with a key missing or extra, a bad name."""
    frames = _seed(rng, t, payloads=rng.random() < 0.7)
    header = _header(frames)
    how = rng.integers(4) if header["arrays"] else 0
    if how == 0:
        if rng.random() < 0.15:
            del header["arrays"]
        else:
            header["arrays"] = _pick(rng, [None, {}, "frames", 3, True, {"name": "frames"}])
        return _with_header(frames, header)
    i = int(rng.integers(len(header["arrays"])))
    spec = header["arrays"][i]
    if how == 1:
        header["arrays"][i] = _pick(rng, [None, [], "frames", 3, [spec["name"], spec["dtype"]]])
    elif how == 2:
        if rng.random() < 0.5:
            del spec[_pick(rng, sorted(spec))]
        else:
            spec[_pick(rng, ["order", "Name", "strides", ""])] = "C"
    else:
        spec["name"] = _pick(rng, ["", None, 3, ["frames"], {}])
    return _with_header(frames, header)


@_mutation("json.huge_number")
def _huge_number(rng, t):
    """A number of over 4300 digits (Python's limit) in a header field or a shape."""
    digits = "9" * int(rng.integers(4301, 20_000))
    frames = _seed(rng, t, payloads=rng.random() < 0.5)
    if len(frames) > 2 and rng.random() < 0.5:
        return _with_header(frames, {**_header(frames), "arrays": [
            {**s, "shape": ["@", *s["shape"][1:]]} for s in _header(frames)["arrays"]]}, digits)
    return _set_field(rng, frames, "@", digits)


@_mutation("json.deep")
def _deep(rng, t):
    """A header field nested deeper than the JSON parser recurses."""
    depth = int(rng.integers(2_000, 30_000))
    return _set_field(rng, _seed(rng, t), "@", "[" * depth + "]" * depth)


@_mutation("echo.long")
def _echo_long(rng, t):
    """A long non-ASCII value where the decoder's message quotes it (v, kind, seq, ts, a dtype,
    an array name, a shape): the error reply must still fit in a header."""
    frames = _seed(rng, t, payloads=True)
    char = _pick(rng, ["é", "€", "\U0001f600", "\x7f", '"', "x"])
    value = char * (60_000 // len(char.encode()) // (6 if char == '"' else 1))
    header = _header(frames)
    key = _pick(rng, ["v", "kind", "seq", "ts", "dtype", "name", "shape"])
    spec = header["arrays"][0]
    if key in ("dtype", "name"):
        spec[key] = value
        if key == "name":
            spec["dtype"] = "float16"
    elif key == "shape":
        spec["shape"] = [value]
    else:
        header[key] = value
    return _with_header(frames, header)


@_mutation("random")
def _random(rng, t):
    """1-6 frames of random bytes, sometimes behind a valid topic."""
    frames = [_bytes(rng, 0, 2000 if rng.random() < 0.1 else 64)
              for _ in range(rng.integers(1, 7))]
    if rng.random() < 0.3:
        frames[0] = _pick(rng, wire.KINDS).encode()
    return frames


# Refused by the service (they decode).

@_mutation("kind.reply_only", service=True)
def _reply_only(rng, t):
    """A well-formed message of a kind only the service sends (scores, result, ack, error)."""
    kinds = [k for k in REPLY_KINDS if k in wire.KINDS]
    arrays = {"trial_r": rng.standard_normal(2)} if rng.random() < 0.5 else None
    return _encode(_pick(rng, kinds), {"run": RUN, "trial": t, "reason": "fuzz"}, arrays)


@_mutation("run.unknown", service=True)
def _unknown_run(rng, t):
    """A trial or finish for a run never opened (a name, or a number, null, a list)."""
    run = _pick(rng, [f"nope-{rng.integers(2**32):08x}", "", "FUZZ", 7, None, [RUN], {"run": RUN}])
    return _trial(rng, t, run=run) if rng.random() < 0.6 else _encode("finish", {"run": run})


@_mutation("fields.missing", service=True)
def _missing(rng, t):
    """A required field left out: a trial without run, trial, unit or frames, a finish without
    run, an open without one of its fields."""
    how = rng.integers(3)
    if how == 0:
        return _trial(rng, t, drop=(_pick(rng, ["run", "trial", "unit", "frames"]),))
    if how == 1:
        return _encode("finish", {"reason": "no run"} if rng.random() < 0.5 else None)
    fields = {"run": OTHER_RUN, **OPEN}
    del fields[_pick(rng, sorted(fields))]
    return _encode("open", fields)


@_mutation("fields.type", service=True)
def _field_type(rng, t):
    """A trial's 'trial' or 'unit' that is no integer: a string, null, a list, an object, 1e400."""
    key = _pick(rng, ["trial", "unit"])
    value = _pick(rng, ["abc", "", "three", None, [t], {"trial": t}, "@"])
    frames = _trial(rng, t, **{key: value})
    if value == "@":
        frames[1] = frames[1].replace(b'"@"', b"1e400", 1)
    return frames


@_mutation("trial.order", service=True)
def _order(rng, t):
    """A trial index ahead of the one the run expects, or negative."""
    trial = t + int(rng.integers(1, 1000)) if rng.random() < 0.7 else -int(rng.integers(1, 1000))
    return _trial(rng, trial)


@_mutation("features.count", service=True)
def _features_count(rng, t):
    """One layer's features with the wrong number of features (columns)."""
    name = _pick(rng, sorted(N_FEATURES))
    n = N_FEATURES[name] + _pick(rng, [d for d in range(-N_FEATURES[name], 6) if d])
    return _trial(rng, t, **{f"features/{name}": np.zeros((N_FRAMES, n), np.float32)})


@_mutation("features.frames", service=True)
def _features_frames(rng, t):
    """Features and brain frames with different numbers of frames (rows)."""
    n = N_FRAMES + _pick(rng, [d for d in range(-N_FRAMES, 6) if d])
    if rng.random() < 0.5:
        return _trial(rng, t, frames=np.zeros((n, OPEN["n_voxels"]), np.float32))
    name = _pick(rng, sorted(N_FEATURES))
    return _trial(rng, t, **{f"features/{name}": np.zeros((n, N_FEATURES[name]), np.float32)})


@_mutation("features.missing", service=True)
def _features_missing(rng, t):
    """A layer's features left out or misnamed."""
    name = _pick(rng, sorted(N_FEATURES))
    frames = _trial(rng, t)
    header = _header(frames)
    spec = next(s for s in header["arrays"] if s["name"] == f"features/{name}")
    if rng.random() < 0.5:
        i = header["arrays"].index(spec)
        del header["arrays"][i], frames[2 + i]
    else:
        spec["name"] = _pick(rng, [f"features/{name.upper()}", f"feature/{name}", name,
                                   f"features/{name} "])
    return _with_header(frames, header)


@_mutation("frames.shape", service=True)
def _frames_shape(rng, t):
    """Brain frames with the wrong number of voxels, or not 2-D."""
    v = OPEN["n_voxels"]
    bad = [(N_FRAMES, v + 1), (N_FRAMES, v - 1), (N_FRAMES, 0), (N_FRAMES * v,), (),
           (N_FRAMES, v, 1), (1, N_FRAMES, v), (v, N_FRAMES)]
    return _trial(rng, t, frames=np.zeros(_pick(rng, bad), np.float32))


@_mutation("features.ndim", service=True)
def _features_ndim(rng, t):
    """A layer's features not 2-D."""
    name = _pick(rng, sorted(N_FEATURES))
    n = N_FEATURES[name]
    shape = _pick(rng, [(N_FRAMES * n,), (), (N_FRAMES, n, 1), (1, N_FRAMES, n), (N_FRAMES,)])
    return _trial(rng, t, **{f"features/{name}": np.zeros(shape, np.float32)})


@_mutation("features.nonfinite", service=True)
def _features_nonfinite(rng, t):
    """NaN or infinity in a layer's features."""
    name = _pick(rng, sorted(N_FEATURES))
    X = rng.standard_normal((N_FRAMES, N_FEATURES[name])).astype(np.float32)
    X.flat[rng.choice(X.size, int(rng.integers(1, 4)), replace=False)] = _pick(
        rng, [np.nan, np.inf, -np.inf])
    return _trial(rng, t, **{f"features/{name}": X})


@_mutation("open.invalid", service=True)
def _open_invalid(rng, t):
    """An open with one field out of range or of the wrong type."""
    bad = {"n_voxels": [0, -1, "abc", None, [], 10**400], "n_units": [-1, -5, "x", None],
           "warmup": [-1, "x", None], "layers": [[], None, 5], "lags": [[], [-1], [1.5], [True],
                                                                       "x", None],
           "alphas": [[], ["x"], [-1.0], None, "x"], "forgetting": [0, 2, -0.5, "x", None],
           "dtype": ["int8", "float16", "", 5], "device": ["nope!", ""],
           "drift_threshold": [0, -1, "x", None], "components": [-1, 2.5, "x", None, True]}
    key = _pick(rng, sorted(bad))
    return _encode("open", {"run": OTHER_RUN, **OPEN, key: _pick(rng, bad[key])})


@_mutation("unit.range", service=True)
def _unit_range(rng, t):
    """A trial whose unit is outside [0, n_units) (it must not change the run either)."""
    unit = _pick(rng, [OPEN["n_units"], OPEN["n_units"] + int(rng.integers(1, 100)), -1,
                       -int(rng.integers(2, 100))])
    return _trial(rng, t, unit=unit)


@_mutation("echo.service", service=True)
def _echo_service(rng, t):
    """A long non-ASCII value that decodes but that the service's checks may quote whole: an
    unknown run's name, an open's alphas, device or dtype."""
    value = _pick(rng, ["é", "€", "\x7f"]) * 20_000
    how = int(rng.integers(6))
    frames = (_trial(rng, t) if how == 0 else _encode("finish", {"run": RUN}) if how == 1
              else _encode("open", {"run": OTHER_RUN, **OPEN}))
    header = _header(frames)  # written back as UTF-8: json.dumps would escape it past 64 kB
    key, wrap = [("run", False), ("run", False), ("alphas", True), ("device", False),
                 ("dtype", False), ("device", True)][how]
    header[key] = [value] if wrap else value
    return _with_header(frames, header)


DEFAULT_CLASSES = tuple(MUTATIONS)


# -- generation and classification -------------------------------------------------------------

@dataclass
class Case:
    """One generated message: its class, frames, and the decoder's verdict on it."""

    mutation: str
    frames: list
    decoder_reason: str | None  # decode's error message; None when it decodes
    decoder_error: str = "ProtocolError"  # the exception type decode raised

    @property
    def bad(self) -> bool:
        """Certain to be refused: by the decoder, or by the service by construction."""
        return self.decoder_reason is not None or MUTATIONS[self.mutation].service


def classify(mutation: str, frames: list) -> Case:
    """Run `replay.wire.decode` on ``frames`` (as the service will)."""
    try:
        wire.decode(frames)
    except wire.ProtocolError as err:
        return Case(mutation, frames, str(err))
    except Exception as err:  # noqa: BLE001 - a decoder fault, reported by the driver
        return Case(mutation, frames, str(err), type(err).__name__)
    return Case(mutation, frames, None)


def generate(seed: int, classes=DEFAULT_CLASSES, next_trial: int = WARMUP_TRIALS):
    """Endless `Case` stream, seeded: each message of a class drawn uniformly from ``classes``;
    trials aim at RUN's ``next_trial``."""
    rng = np.random.default_rng(seed)
    classes = list(classes)
    while True:
        name = classes[rng.integers(len(classes))]
        yield classify(name, MUTATIONS[name].make(rng, next_trial))
