"""Any recording as numpy arrays: one ``.npy`` of frames x voxels per session, an events CSV each,
and a folder of sound files.

Events CSV, one row per presentation in the order heard (onsets must not decrease):

    onset_s      the sound's onset (s) from the session's first frame
    stimulus     its sound file, relative to the sound folder (suffix optional)
    duration_s   optional: how long it played (s); default, or empty: the sound's length
    repeat       optional: its presentation count (0 first); default: counted in the session

All sessions belong to one subject; each is named after its ``.npy`` file. Voxel coordinates come
from ``coords`` (a ``.npy`` of shape (n_voxels, 3)), else (voxel index, 0, 0); region labels from
``regions`` (a text file, one label a line), else "unlabelled".
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..store import MODALITIES
from .sounds import SoundFolder, read_sounds
from .tables import Table, counted_repeats
from .target import ImportSummary, check_target, new_store


def _array(path, what: str) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    try:
        # mmap: a session is read in chunks as the store writes it; no pickles, ever
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        raise ValueError(f"{path.name}: not a numpy .npy array ({' '.join(str(err).split())}); save it "
                         "with numpy.save") from None


def _responses(paths) -> list[np.ndarray]:
    arrays = [_array(p, "responses") for p in paths]
    for path, X in zip(paths, arrays):
        if X.ndim != 2 or not np.issubdtype(X.dtype, np.number) or np.iscomplexobj(X):
            raise ValueError(f"{Path(path).name}: responses of shape {X.shape} and dtype {X.dtype}; expected "
                             "real numbers of shape (n_frames, n_voxels)")
        if X.shape[1] != arrays[0].shape[1]:
            raise ValueError(f"{Path(path).name}: {X.shape[1]} voxels, but {Path(paths[0]).name} has "
                             f"{arrays[0].shape[1]}; every session of a subject has the same voxels")
    return arrays


def _voxels(coords, regions, n_voxels: int):
    if coords is None:
        xyz = np.zeros((n_voxels, 3), dtype=np.float32)
        xyz[:, 0] = np.arange(n_voxels)
    else:
        xyz = _array(coords, "coords")
        if xyz.shape != (n_voxels, 3):
            raise ValueError(f"coords {Path(coords).name}: shape {xyz.shape}, but the responses have "
                             f"{n_voxels} voxels; expected ({n_voxels}, 3)")
    if regions is None:
        return xyz, None
    path = Path(regions)
    if not path.is_file():
        raise FileNotFoundError(f"regions {str(path)!r} does not exist")
    labels = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(labels) != n_voxels:
        raise ValueError(f"regions {path.name}: {len(labels)} labels, but the responses have {n_voxels} "
                         "voxels; give one label a line, one line per voxel")
    return xyz, labels


def _events(path, folder: SoundFolder, n_frames: int, rate: float):
    """(table, sound file of each row, onsets) of one session, checked against its frames."""
    table = Table(path, required=["onset_s", "stimulus"], what="events")
    if not len(table):
        raise ValueError(f"events {table.path.name}: no events (only a header); the replay needs at least one")
    onsets = table.numbers("onset_s")
    files = [folder.find(name, f"events {table.path.name}, row {i + 2}")
             for i, name in enumerate(table.strings("stimulus"))]
    for i in np.flatnonzero(np.diff(onsets) < 0)[:1]:
        table.fail(i + 1, "onset_s", f"{onsets[i + 1]:g} comes after {onsets[i]:g}; rows are presentations "
                                     "in the order heard: sort them by onset_s")
    for i in np.flatnonzero((onsets < 0) | (onsets * rate >= n_frames))[:1]:
        table.fail(i, "onset_s", f"{onsets[i]:g} s is outside the session (0-{n_frames / rate:g} s: "
                                 f"{n_frames} frames at {rate:g} Hz)")
    return table, files, onsets


def import_generic(out, sounds, responses, events, *, frame_rate_hz: float, modality: str,
                   subject: str = "sub-01", coords=None, regions=None, sample_rate: int | None = None,
                   force: bool = False) -> ImportSummary:
    """Write the recording store ``out`` from ``responses`` (``.npy`` paths, one per session) and
    their ``events`` (CSV paths, paired in order), with sounds from the folder ``sounds``.

    >>> import tempfile, pathlib, soundfile
    >>> from replay.store import open_recording
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> (tmp / "snd").mkdir(); soundfile.write(tmp / "snd" / "a.wav", np.ones(8000) * 0.1, 8000)
    >>> np.save(tmp / "s1.npy", np.ones((6, 4), np.float32))
    >>> _ = (tmp / "s1.csv").write_text("onset_s,stimulus\\n0,a\\n3,a\\n")
    >>> print(import_generic(tmp / "rec.zarr", tmp / "snd", [tmp / "s1.npy"], [tmp / "s1.csv"],
    ...                      frame_rate_hz=1.0, modality="fus").events)
    2
    >>> open_recording(tmp / "rec.zarr").events("sub-01", "s1").repeat.tolist()
    [0, 1]
    """
    out = check_target(out, force)
    if modality not in MODALITIES:
        raise ValueError(f"Invalid value for the 'modality' parameter. Allowed values are "
                         f"{' and '.join(map(repr, MODALITIES))}, but got {modality!r} instead.")
    if not (isinstance(frame_rate_hz, (int, float)) and frame_rate_hz > 0):
        raise ValueError(f"Invalid value for the 'frame_rate_hz' parameter. Allowed values are positive "
                         f"numbers (Hz), but got {frame_rate_hz!r} instead.")
    responses, events = list(responses), list(events)
    if not responses or len(responses) != len(events):
        raise ValueError(f"got {len(responses)} responses file(s) and {len(events)} events file(s); give one "
                         "events CSV per responses .npy, in the same order")
    names = [Path(p).stem for p in responses]
    if len(set(names)) != len(names):
        raise ValueError(f"responses files {names} repeat a name; each names its session, so they must differ")
    arrays = _responses(responses)
    xyz, labels = _voxels(coords, regions, arrays[0].shape[1])
    folder = SoundFolder(sounds, "sound folder")
    sessions = [_events(p, folder, len(X), frame_rate_hz) for p, X in zip(events, arrays)]
    files = sorted({f for _, fs, _ in sessions for f in fs})
    waves, rate, stim_names, categories = read_sounds(folder, files, sample_rate)
    index = {f: i for i, f in enumerate(files)}

    planned = [_plan(table, fs, onsets, index, waves, rate, len(X) / frame_rate_hz)
               for X, (table, fs, onsets) in zip(arrays, sessions)]

    summary = ImportSummary(out, subjects=1, sessions=len(arrays), stimuli=len(files))
    with new_store(out, modality, force) as writer:
        writer.write_stimuli(waves, rate, stim_names, categories)
        writer.attrs["import"] = {"importer": "generic", "responses": [Path(p).name for p in responses],
                                  "events": [Path(p).name for p in events]}
        writer.write_voxels(subject, xyz, labels)
        for name, X, ev in zip(names, arrays, planned):
            with writer.open_session(subject, name, X.shape[1], frame_rate_hz) as session:
                for start in range(0, len(X), session.chunk_frames):  # a chunk in memory at a time
                    session.append(X[start:start + session.chunk_frames])
                session.set_events(**ev)
            summary.events += len(ev["stimulus"])
    return summary


def _plan(table: Table, files, onsets, index, waves, rate: int, end_s: float) -> dict:
    """The session's events for the store: durations and repeats filled in, and checked."""
    stimulus = np.array([index[f] for f in files], dtype=np.int64)
    lengths = np.array([len(waves[i]) / rate for i in stimulus])
    duration = table.numbers("duration_s", missing=np.nan) if "duration_s" in table else lengths
    duration = np.where(np.isnan(duration), lengths, duration)
    for i in np.flatnonzero((duration < 0) | (onsets + duration > end_s + 1e-6))[:1]:
        table.fail(i, "duration_s", f"the sound plays {onsets[i]:g}-{onsets[i] + duration[i]:g} s, outside the "
                                    f"session's 0-{end_s:g} s; give a duration_s that ends by then")
    repeat = table.integers("repeat") if "repeat" in table else counted_repeats(stimulus)
    return dict(onset_s=onsets, stimulus=stimulus, duration_s=duration, repeat=repeat)
