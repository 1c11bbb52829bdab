"""The recording store: sounds, voxels and brain frames of a session, in Zarr v3.

Layout (every array carries Zarr v3 ``dimension_names``, so xarray opens it with named dims)::

    recording.zarr/                 attrs format, version, modality ("fus" | "fmri")
      stimuli/audio                 (stimulus, sample) float32, zero-padded rows
      stimuli/lengths               (stimulus,) int64; group attrs sample_rate, names, categories
      subjects/<s>/voxels/coords    (voxel, xyz) float32; group attrs regions (one label per voxel)
      subjects/<s>/sessions/<k>/responses   (frame, voxel) float32, attrs frame_rate_hz
      subjects/<s>/sessions/<k>/events/{onset_s, stimulus, duration_s, repeat}   (event,)

``validate`` refuses a store that would replay wrongly: broken metadata, missing or corrupted
chunks, events of stimuli without usable audio; NaN frames follow the policy of ``replay.trials``.
"""

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from .checks import check_choice

FORMAT = "cortexreplay.recording"
STORE_VERSION = 1
MODALITIES = ("fus", "fmri")
EVENT_FIELDS = {"onset_s": np.float64, "stimulus": np.int64, "duration_s": np.float64, "repeat": np.int64}
MAX_NONFINITE_FRACTION = 0.1  # a voxel non-finite in more of a session's frames is masked (replay.trials)
MAX_CHANNELS = 8  # write_stimuli downmixes (n_samples, n_channels) waveforms up to this many channels
# Zarr skips chunks equal to the fill value by default, and reads a missing chunk as that fill
# value; writing every chunk lets validate() tell an interrupted write from a silent sound.
_EVERY_CHUNK = {"write_empty_chunks": True}


class StoreError(ValueError):
    """A recording store, or data written to one, breaks the layout; the message says how to fix it."""


def _children(group, key, order):
    """Names of the groups under group/key, ordered, or [] when there is no such group."""
    child = group.get(key)
    return order(child.group_keys()) if child is not None else []


def _natural(keys):
    # Sessions "0", "1", ..., "10" sort as numbers, other names alphabetically after them.
    return sorted(keys, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k))


def _key(kind, value):
    key = str(value)
    if not key or "/" in key or key.startswith("."):
        raise StoreError(f"Invalid {kind} name {key!r}: use a non-empty name without '/' or a leading '.'")
    return key


class _Closing:
    """``with`` support for the writers: leaving the block calls ``close()``."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SessionWriter(_Closing):
    """Streams the frames of one session into ``responses`` in whole chunks (from ``open_session``)."""

    def __init__(self, group, n_voxels, frame_rate_hz, chunk_frames):
        self._group, self.n_voxels, self.chunk_frames = group, n_voxels, chunk_frames
        self.responses = group.create_array(
            "responses", shape=(0, n_voxels), chunks=(chunk_frames, n_voxels), dtype="float32",
            dimension_names=("frame", "voxel"), attributes={"frame_rate_hz": float(frame_rate_hz)},
            overwrite=True, config=_EVERY_CHUNK)
        self._buffer, self._n_buffered = [], 0
        self._events_set = self.closed = False

    @property
    def n_frames(self):
        """Frames appended so far, written or still buffered."""
        return self.responses.shape[0] + self._n_buffered

    def append(self, frames):
        """Add frames (n_frames, n_voxels) or one frame (n_voxels,); writes only whole chunks."""
        X = np.array(frames, dtype=np.float32, ndmin=2)  # a copy: callers may reuse their buffer
        if X.ndim != 2 or X.shape[1] != self.n_voxels:
            raise StoreError(f"{self.responses.path}: frames have shape {np.shape(frames)}, "
                             f"but this session has {self.n_voxels} voxels; pass (n_frames, {self.n_voxels})")
        self._buffer, self._n_buffered = self._buffer + [X], self._n_buffered + len(X)
        self._flush(self._n_buffered // self.chunk_frames * self.chunk_frames)

    def _flush(self, n):
        # Every write starts on a chunk boundary, because only whole chunks leave the buffer
        # before close(); so no chunk is ever read back and rewritten.
        if n > 0:
            block, start = np.concatenate(self._buffer), self.responses.shape[0]
            self._buffer, self._n_buffered = [block[n:]], len(block) - n
            self.responses.resize((start + n, self.n_voxels))
            self.responses[start:start + n] = block[:n]

    def set_events(self, onset_s, stimulus, duration_s, repeat):
        """Write the presentation order: one entry per event, all four of equal length."""
        values = (onset_s, stimulus, duration_s, repeat)
        arrays = {k: np.asarray(v, dtype=t).ravel() for (k, t), v in zip(EVENT_FIELDS.items(), values)}
        lengths = {k: len(a) for k, a in arrays.items()}
        if len(set(lengths.values())) > 1:
            raise StoreError(f"{self._group.path}/events: arrays have unequal lengths {lengths}; "
                             "pass one value per event to each")
        for k, a in arrays.items():
            self._group.create_array(f"events/{k}", shape=a.shape, chunks=(max(1, len(a)),),
                                     dtype=a.dtype, dimension_names=("event",), overwrite=True)[:] = a
        self._events_set = True

    def close(self):
        """Write the partial last chunk (and empty events if none were set)."""
        if not self.closed:
            self._flush(self._n_buffered)
            if not self._events_set:
                self.set_events([], [], [], [])
            self.closed = True


class RecordingWriter(_Closing):
    """Write a recording store; refuses a non-empty path unless ``overwrite=True``.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> tmp = tempfile.TemporaryDirectory()
    >>> with RecordingWriter(tmp.name + "/rec.zarr") as w:
    ...     w.write_stimuli([np.ones(8), np.ones(4)], sample_rate=4, categories=["a", "b"])
    ...     w.write_voxels("s1", np.zeros((3, 3)), regions=["A1", "A1", "PEG"])
    ...     w.write_session("s1", 0, np.ones((5, 3)), frame_rate_hz=1.0, events=dict(
    ...         onset_s=[0.0, 3.0], stimulus=[0, 1], duration_s=[2.0, 1.0], repeat=[0, 0]))
    >>> rec = open_recording(tmp.name + "/rec.zarr")
    >>> rec.subjects, rec.sessions("s1"), rec.responses("s1", 0).shape, len(rec.events("s1", 0))
    (['s1'], ['0'], (5, 3), 2)
    >>> round(float(rec.audio(1).sum()), 1)
    4.0
    >>> tmp.cleanup()
    """

    def __init__(self, path, modality="fus", overwrite=False):
        check_choice("modality", modality, MODALITIES, StoreError)
        self.path = Path(path)
        if self.path.exists() and not overwrite and (self.path.is_file() or any(self.path.iterdir())):
            raise StoreError(f"{self.path.name}: path exists and is not empty; pass overwrite=True "
                             "(--force on the command line) to replace it")
        if self.path.is_file():
            self.path.unlink()
        self._root = zarr.open_group(self.path, mode="w", attributes={
            "format": FORMAT, "version": STORE_VERSION, "modality": modality})
        self._open = []

    @property
    def attrs(self):
        """Root attributes, writable (e.g. a producer's ground-truth parameters)."""
        return self._root.attrs

    def write_stimuli(self, audio, sample_rate, names=None, categories=None):
        """Write the sounds: a list of waveforms of any lengths, or a 2-D array (n_stimuli, n_samples).

        A waveform is 1-D (n_samples,), or 2-D (n_samples, n_channels) as soundfile reads it, with
        n_channels <= 8 and n_samples > n_channels: it is stored downmixed to mono (channel mean).
        """
        rows = [self._mono(i, a) for i, a in enumerate(audio)]  # a 2-D array iterates over its rows
        n = len(rows)
        names = [f"stim{i:03d}" for i in range(n)] if names is None else [str(s) for s in names]
        categories = ["unknown"] * n if categories is None else [str(c) for c in categories]
        if not (np.isscalar(sample_rate) and sample_rate > 0 and int(sample_rate) == sample_rate):
            raise StoreError(f"stimuli: sample_rate must be a positive integer (Hz), but got {sample_rate!r}")
        if len(names) != n or len(categories) != n:
            raise StoreError(f"stimuli: got {n} waveforms, {len(names)} names and {len(categories)} "
                             "categories; pass one name and one category per waveform")
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        width = int(lengths.max(initial=0))
        # One chunk per sound: a trial reads exactly one chunk.
        arr = self._root.create_array("stimuli/audio", shape=(n, width), chunks=(1, max(1, width)),
                                      dtype="float32", dimension_names=("stimulus", "sample"),
                                      config=_EVERY_CHUNK)
        for i, r in enumerate(rows):  # loop over sounds (hundreds), not samples
            arr[i] = np.pad(r, (0, width - len(r)))
        self._root.create_array("stimuli/lengths", shape=(n,), chunks=(max(1, n),), dtype="int64",
                                dimension_names=("stimulus",))[:] = lengths
        self._root["stimuli"].attrs.update(
            {"sample_rate": int(sample_rate), "names": names, "categories": categories})

    def _mono(self, i, wave):
        """Stimulus i as a 1-D float32 waveform; (n_samples, n_channels) is averaged over channels."""
        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim == 2 and wave.shape[1] <= MAX_CHANNELS and wave.shape[0] > wave.shape[1]:
            return wave.mean(axis=1, dtype=np.float32)
        if wave.ndim != 1:
            raise StoreError(f"{self.path.name}/stimuli/audio: stimulus {i} has shape {wave.shape}; pass "
                             f"(n_samples,) or (n_samples, n_channels <= {MAX_CHANNELS}) to downmix to mono")
        return wave

    def write_voxels(self, subject, coords, regions=None):
        """Write a subject's voxel coordinates (n_voxels, 3) and one region label per voxel."""
        s = _key("subject", subject)
        coords = np.asarray(coords, dtype=np.float32)
        if coords.ndim != 2 or coords.shape[1] != 3:
            raise StoreError(f"subjects/{s}/voxels/coords: shape {coords.shape}, expected (n_voxels, 3)")
        regions = ["unlabelled"] * len(coords) if regions is None else [str(r) for r in regions]
        if len(regions) != len(coords):
            raise StoreError(f"subjects/{s}/voxels: {len(regions)} region labels for {len(coords)} "
                             "voxels; pass one label per voxel")
        self._root.create_array(f"subjects/{s}/voxels/coords", shape=coords.shape, chunks=coords.shape
                                if len(coords) else (1, 3), dtype="float32",
                                dimension_names=("voxel", "xyz"), overwrite=True)[:] = coords
        self._root[f"subjects/{s}/voxels"].attrs["regions"] = regions

    def open_session(self, subject, session, n_voxels, frame_rate_hz, chunk_frames=64):
        """Start streaming a session; returns a ``SessionWriter`` (close it, or close this writer)."""
        s, k = _key("subject", subject), _key("session", session)
        coords = self._root.get(f"subjects/{s}/voxels/coords")
        if coords is not None and coords.shape[0] != n_voxels:
            raise StoreError(f"subjects/{s}/sessions/{k}: n_voxels={n_voxels}, but subject {s!r} "
                             f"has {coords.shape[0]} voxel coordinates; they must match")
        if not frame_rate_hz > 0 or int(chunk_frames) < 1 or int(n_voxels) < 1:
            raise StoreError(f"subjects/{s}/sessions/{k}: frame_rate_hz, n_voxels and chunk_frames must "
                             f"be positive, but got {frame_rate_hz!r}, {n_voxels!r}, {chunk_frames!r}")
        group = self._root.require_group(f"subjects/{s}/sessions/{k}")
        writer = SessionWriter(group, int(n_voxels), frame_rate_hz, int(chunk_frames))
        self._open.append(writer)
        return writer

    def write_session(self, subject, session, responses, frame_rate_hz, events, chunk_frames=64):
        """Write a whole session: responses (n_frames, n_voxels) and an events dict of four arrays."""
        responses = np.asarray(responses)
        with self.open_session(subject, session, responses.shape[-1], frame_rate_hz, chunk_frames) as w:
            w.append(responses)
            w.set_events(**events)

    def close(self):
        """Close every session still open (flushing its last partial chunk)."""
        for writer in self._open:
            writer.close()
        self._open.clear()


@dataclass(frozen=True, eq=False)
class Events:
    """Presentation order of one session: one entry per event (numpy arrays)."""

    onset_s: np.ndarray
    stimulus: np.ndarray
    duration_s: np.ndarray
    repeat: np.ndarray

    def __len__(self):
        return len(self.onset_s)


class Recording:
    """Read access to a recording store; arrays stay lazy (see ``RecordingWriter`` for an example)."""

    def __init__(self, root, name):
        self._root, self._name = root, name
        stimuli = root["stimuli"]
        self._audio, self._lengths = stimuli["audio"], stimuli["lengths"][:]
        self._stim_attrs = stimuli.attrs.asdict()

    def __repr__(self):
        return f"<Recording {self._name}: {self.modality}, {self.n_stimuli} stimuli, subjects {self.subjects}>"

    name = property(lambda self: self._name, doc="The store's file name, as error messages give it.")
    modality = property(lambda self: self._root.attrs["modality"])
    attrs = property(lambda self: self._root.attrs.asdict(), doc="Root attributes (a copy).")
    sample_rate = property(lambda self: int(self._stim_attrs["sample_rate"]))
    n_stimuli = property(lambda self: int(self._audio.shape[0]))
    stimulus_names = property(lambda self: list(self._stim_attrs["names"]))
    categories = property(lambda self: list(self._stim_attrs["categories"]))
    subjects = property(lambda self: _children(self._root, "subjects", sorted), doc="Sorted subject names.")

    def _subject(self, subject):
        s = str(subject)
        if s not in self.subjects:
            raise StoreError(f"{self._name}: unknown subject {s!r}; the store has subjects {self.subjects}")
        return self._root[f"subjects/{s}"]

    def sessions(self, subject):
        return _children(self._subject(subject), "sessions", _natural)

    def _session(self, subject, session):
        k = str(session)
        if k not in self.sessions(subject):
            raise StoreError(f"{self._name}: unknown session {k!r} of subject {subject!r}; "
                             f"it has sessions {self.sessions(subject)}")
        return self._root[f"subjects/{subject}/sessions/{k}"]

    def audio(self, i):
        """Waveform of stimulus i, float32 (n_samples_i,), padding trimmed."""
        if not 0 <= i < self.n_stimuli:
            raise StoreError(f"{self._name}: stimulus {i} out of range; the store has "
                             f"{self.n_stimuli} stimuli (indices 0-{self.n_stimuli - 1})")
        return self._audio[i, : int(self._lengths[i])]

    def responses(self, subject, session):
        """The (frame, voxel) zarr array, lazy: slicing it reads only the chunks needed."""
        return self._session(subject, session)["responses"]

    def frame_rate(self, subject, session):
        return float(self.responses(subject, session).attrs["frame_rate_hz"])

    def events(self, subject, session):
        group = self._session(subject, session)
        return Events(**{k: group[f"events/{k}"][:] for k in EVENT_FIELDS})

    def voxel_coords(self, subject):
        return self._subject(subject)["voxels/coords"][:]

    def regions(self, subject):
        return np.asarray(self._subject(subject)["voxels"].attrs["regions"], dtype=str)


def open_recording(path, validate=True):
    """Open a recording store for reading, after checking it with ``validate`` unless told not to."""
    if validate:
        _validate_store(path)  # the module's validate(), shadowed here by the parameter
    return Recording(zarr.open_group(path, mode="r"), Path(path).name)


def validate(path):
    """Raise ``StoreError`` on the first problem of the store at ``path``; return None if it is sound.

    Reads every chunk of ``responses`` and ``stimuli/audio`` once, one at a time, so a missing or
    corrupted chunk, or a sound no model can hear, is found before any run starts.
    """
    check = _Check(path)
    root = check.root
    attrs = root.attrs.asdict()
    if attrs.get("format") != FORMAT:
        check.fail("", f"format attribute is {attrs.get('format')!r}, expected {FORMAT!r}; "
                       "is this a recording store?")
    if attrs.get("version") != STORE_VERSION:
        check.fail("", f"store version {attrs.get('version')!r}, but this cortexreplay reads version {STORE_VERSION}")
    if attrs.get("modality") not in MODALITIES:
        check.fail("", f"modality attribute is {attrs.get('modality')!r}, allowed values are {list(MODALITIES)}")

    audio, lengths = check.need("stimuli/audio", 2), check.need("stimuli/lengths", 1)
    n_stim, stim_attrs = audio.shape[0], root["stimuli"].attrs.asdict()
    if lengths.shape[0] != n_stim:
        check.fail("stimuli/lengths", f"{lengths.shape[0]} lengths for {n_stim} audio rows; they must match")
    lengths = check.read("stimuli/lengths", lengths)
    for i in np.flatnonzero((lengths < 0) | (lengths > audio.shape[1]))[:1]:
        check.fail("stimuli/lengths", f"stimulus {i} has length {lengths[i]}, outside 0-{audio.shape[1]}")
    rate = stim_attrs.get("sample_rate")
    if not isinstance(rate, int) or rate <= 0:
        check.fail("stimuli", f"sample_rate attribute is {rate!r}; it must be a positive integer (Hz)")
    for key in ("names", "categories"):
        if len(stim_attrs.get(key, [])) != n_stim:
            check.fail("stimuli", f"{key} attribute has {len(stim_attrs.get(key, []))} entries for {n_stim} stimuli")

    sessions, used = [], {}  # used: stimulus -> (session, event) of its first presentation
    for s in _children(root, "subjects", sorted):
        n_vox = check.need(f"subjects/{s}/voxels/coords", 2).shape
        if n_vox[1] != 3:
            check.fail(f"subjects/{s}/voxels/coords", f"shape {n_vox}, expected (n_voxels, 3)")
        n_regions = len(root[f"subjects/{s}/voxels"].attrs.get("regions", []))
        if n_regions != n_vox[0]:
            check.fail(f"subjects/{s}/voxels", f"{n_regions} region labels for {n_vox[0]} voxels; give one per voxel")
        for k in _children(root, f"subjects/{s}/sessions", _natural):
            key = f"subjects/{s}/sessions/{k}"
            responses, stimulus = _validate_session(check, key, n_vox[0], n_stim)
            sessions.append((key, responses))
            for i, e in zip(*np.unique(stimulus, return_index=True)):  # a loop over sounds
                used.setdefault(int(i), (key, int(e)))
    # Sounds before frames: they are cheaper to read, and as likely to be wrong.
    _validate_audio(check, audio, lengths, stim_attrs.get("names", []), used)
    for key, responses in sessions:
        check.complete(f"{key}/responses", responses)
        _scan_nonfinite(responses, f"{check.name}/{key}/responses", MAX_NONFINITE_FRACTION)


_validate_store = validate


def _one_line(err):
    return " ".join(str(err).split())


def _read(where, array, selection, what):
    """``array[selection]``; a chunk that does not decode (``what``) becomes a ``StoreError``."""
    try:
        return array[selection]
    except (RuntimeError, ValueError) as err:  # what codecs raise: zstd RuntimeError, a wrong size ValueError
        raise StoreError(f"{where}: {what} does not decode ({_one_line(err)}); the store is corrupted: "
                         "rewrite it with RecordingWriter") from err


class _Check:
    """What ``validate`` needs at hand: the store's root, and one wording of every failure."""

    def __init__(self, path):
        self.name = Path(path).name
        if Path(path).is_dir():  # a local store: its metadata files can be checked before zarr reads them
            self._nodes(Path(path), "")
        try:
            self.root = zarr.open_group(path, mode="r")
        except (OSError, ValueError):
            self.fail("", f"not a Zarr group; expected a {FORMAT} store written by RecordingWriter")

    def fail(self, key, problem):
        raise StoreError(f"{self.name}/{key}: {problem}" if key else f"{self.name}: {problem}")

    def _nodes(self, folder, key):
        """Check the zarr.json of the node in ``folder`` and, for a group, of every node below it.

        Zarr takes a group whose zarr.json is lost for no group at all, so its arrays would just
        vanish from the replay; and it reports bad JSON without saying which file.
        """
        try:
            meta = json.loads((folder / "zarr.json").read_bytes())
        except FileNotFoundError:
            if not key:
                self.fail("", f"not a Zarr group (no zarr.json); expected a {FORMAT} store written by "
                              "RecordingWriter")
            self.fail(key, "zarr.json is missing (the metadata of this array or group is lost); "
                           "rewrite the store with RecordingWriter")
        except ValueError as err:  # JSONDecodeError or UnicodeDecodeError
            self.fail(key, f"zarr.json is not valid JSON ({_one_line(err)}); the metadata is corrupted: "
                           "rewrite the store with RecordingWriter")
        node_type = meta.get("node_type") if isinstance(meta, dict) else None
        if node_type not in ("array", "group"):
            self.fail(key, f"zarr.json is not Zarr v3 metadata (node_type {node_type!r}); "
                           "rewrite the store with RecordingWriter")
        if node_type == "group":  # an array's folder holds only chunks
            for child in sorted(folder.iterdir()):
                if child.is_dir() and not child.name.startswith("."):
                    self._nodes(child, f"{key}/{child.name}" if key else child.name)

    def need(self, key, ndim):
        """The array at ``key``, with ``ndim`` dimensions."""
        try:
            node = self.root.get(key)
        except (TypeError, ValueError, KeyError) as err:  # zarr.json that is JSON but not valid metadata
            self.fail(key, f"unreadable metadata ({_one_line(err)}); rewrite the store with RecordingWriter")
        if not isinstance(node, zarr.Array):
            self.fail(key, "missing array; rewrite the store with RecordingWriter")
        if node.ndim != ndim:
            self.fail(key, f"has {node.ndim} dimensions {node.shape}, expected {ndim}")
        return node

    def read(self, key, array, selection=slice(None), what="its chunk"):
        return _read(f"{self.name}/{key}", array, selection, what)

    def complete(self, key, array):
        """Refuse an array with chunks missing: zarr would read them as zeros, silently."""
        missing = array.nchunks - array.nchunks_initialized
        if missing > 0:
            self.fail(key, f"{missing} of {array.nchunks} chunks are missing (an interrupted write?), "
                           "which would read as zeros; rewrite the store with RecordingWriter")


def _validate_session(check, key, n_voxels, n_stimuli):
    """Check one session's metadata and events; return its responses array and events' stimuli."""
    responses = check.need(f"{key}/responses", 2)
    n_frames = responses.shape[0]
    if responses.shape[1] != n_voxels:
        check.fail(f"{key}/responses", f"{responses.shape[1]} voxels, but voxels/coords has {n_voxels}; "
                   "they must match")
    rate = responses.attrs.get("frame_rate_hz")
    if not isinstance(rate, (int, float)) or not rate > 0:
        check.fail(f"{key}/responses", f"frame_rate_hz attribute is {rate!r}; it must be a positive number (Hz)")
    ev = {k: check.read(f"{key}/events/{k}", check.need(f"{key}/events/{k}", 1)) for k in EVENT_FIELDS}
    if len({len(a) for a in ev.values()}) > 1:
        check.fail(f"{key}/events", f"arrays of unequal length {({k: len(a) for k, a in ev.items()})}")
    bad = np.flatnonzero((ev["stimulus"] < 0) | (ev["stimulus"] >= n_stimuli))
    if bad.size:
        indices = f"indices 0-{n_stimuli - 1}" if n_stimuli else "none"
        check.fail(f"{key}/events/stimulus", f"event {bad[0]} points to stimulus {ev['stimulus'][bad[0]]}, "
                   f"but the store has {n_stimuli} stimuli ({indices}), and {bad.size} event(s) point past "
                   "them; write the missing stimuli or drop those events")
    start, stop = ev["onset_s"] * rate, (ev["onset_s"] + ev["duration_s"]) * rate
    # A small tolerance: onset + duration is a float sum that may land a hair past the last frame.
    for i in np.flatnonzero((ev["onset_s"] < 0) | (ev["duration_s"] < 0) | (start >= n_frames)
                            | (stop > n_frames + 1e-6))[:1]:
        check.fail(f"{key}/events/onset_s", f"event {i} spans {ev['onset_s'][i]:g}-"
                   f"{ev['onset_s'][i] + ev['duration_s'][i]:g} s, outside the recording "
                   f"(0-{n_frames / rate:g} s, {n_frames} frames at {rate:g} Hz)")
    return responses, ev["stimulus"]


def _validate_audio(check, audio, lengths, names, used):
    """Read every sound once (one chunk each); refuse empty, silent or non-finite audio that an
    event plays (``used``: stimulus -> (session, event)); a sound no event plays may be empty."""
    check.complete("stimuli/audio", audio)
    for i in range(audio.shape[0]):  # a loop over sounds, one chunk each
        wave = check.read("stimuli/audio", audio, i, f"the chunk of stimulus {i}")[: lengths[i]]
        if i not in used:
            continue
        problem = ("is empty (0 samples)" if len(wave) == 0
                   else "holds non-finite samples (NaN or inf)" if not np.isfinite(wave).all()
                   # wav2vec 2.0 divides a waveform by its standard deviation
                   else "is silent (every sample is 0)" if not wave.any() else None)
        if problem:
            key, event = used[i]
            check.fail("stimuli/audio", f"stimulus {i} ({names[i]!r}) {problem}, but event {event} of {key} "
                                        "plays it; give it audio or remove its events")


def _scan_nonfinite(responses, where, max_fraction):
    """Count the non-finite frames of each voxel of a (frame, voxel) array, reading it chunk by
    chunk, and mask the voxels non-finite in more than ``max_fraction`` of the frames; refuse
    (``StoreError`` naming ``where``) a session left without usable frames (``replay.trials``
    states the policy). Returns ``(mask, counts)``, bool and int64 arrays (n_voxels,).
    """
    n_frames, n_voxels = responses.shape
    step = responses.chunks[0]

    def chunks():  # chunk by chunk: never the whole array in memory
        for start in range(0, n_frames, step):
            what = f"the chunk of frames {start}-{min(start + step, n_frames) - 1}"
            yield ~np.isfinite(_read(where, responses, slice(start, start + step), what))

    counts, n_bad_frames = np.zeros(n_voxels, dtype=np.int64), 0
    for bad in chunks():
        counts += bad.sum(axis=0)
        n_bad_frames += int(bad.any(axis=1).sum())
    mask = counts > max_fraction * n_frames
    if n_voxels and mask.all():
        raise StoreError(f"{where}: every voxel is non-finite (NaN or inf) in more than {max_fraction * 100:g}% of "
                         f"the {n_frames} frames, so every voxel would be masked; clean the responses or "
                         "drop this session")
    if 2 * n_bad_frames > n_frames:  # only then can the frames left after masking be too few
        n_bad_frames = sum(int(bad[:, ~mask].any(axis=1).sum()) for bad in chunks())
        if 2 * n_bad_frames > n_frames:
            raise StoreError(f"{where}: {n_bad_frames} of {n_frames} frames hold a non-finite value (NaN or "
                             "inf) outside the masked voxels, more than half; clean the responses or drop "
                             "this session")
    return mask, counts


def describe(path):
    """Multi-line human summary of a (validated) recording store, for ``cortexreplay inspect``."""
    rec = open_recording(path)
    seconds = rec._lengths / rec.sample_rate
    lines = [f"{Path(path).name}: {FORMAT} v{rec.attrs['version']}, modality {rec.modality}",
             f"stimuli: {rec.n_stimuli} at {rec.sample_rate} Hz, durations "
             + (f"{seconds.min():.2f}-{seconds.max():.2f} s" if len(seconds) else "n/a"),
             "categories: " + ", ".join(f"{c} {n}" for c, n in Counter(rec.categories).most_common())]
    for s in rec.subjects:
        labels, counts = np.unique(rec.regions(s), return_counts=True)
        top = np.argsort(-counts, kind="stable")
        regions = ", ".join(f"{labels[j]} {counts[j]}" for j in top[:8])
        regions += f", +{len(top) - 8} more" if len(top) > 8 else ""
        lines.append(f"subject {s}: {len(rec.voxel_coords(s))} voxels; regions: {regions}")
        for k in rec.sessions(s):
            n_frames, rate, ev = rec.responses(s, k).shape[0], rec.frame_rate(s, k), rec.events(s, k)
            repeats = f"{np.unique(ev.repeat).size} repeat indices" if len(ev) else "no repeats"
            lines.append(f"  session {k}: {n_frames} frames at {rate:g} Hz ({n_frames / rate:.1f} s), "
                         f"{len(ev)} events of {np.unique(ev.stimulus).size} stimuli, {repeats}")
    return "\n".join(lines)
