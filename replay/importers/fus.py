"""Ferret fUS in the layout of Landemard et al. 2021 (eLife 10:e65566, data 10.5281/zenodo.5493682).

The layout, with the names of the authors' analysis code (each name can be changed, `FusLayout`)::

    DATA_DIR/<H>_Anat&Param.mat  one per hemisphere <H> (e.g. NTL: experiment N, ferret T, left):
                                 Anat (x, y, n_slices), and the struct param with
                                   param.msk.ManualMask   (x, y, n_slices) logical, the pixels kept
                                   param.exp.PreStimSilence   frames of silence before each sound
                                   param.snd.SoundList    sound names (optional, see ``sound`` below)
    DATA_DIR/<H>_<k>.mat         slice k = 1, 2, ...: Din (time, stimulus, repetition, voxel), whose
                                 voxels are the pixels of ManualMask(:, :, k) in MATLAB's
                                 column-major order
    SOUNDS/                      the sound files

Those arrays are ordered by stimulus and repetition, not by time: the order in which the animal
heard the sounds is not in them, and the replay feeds a learning network the sounds in exactly that
order. So the importer takes it from a presentation-order table (CSV), one row per presentation,
in the order heard:

    stimulus     1-based index along Din's stimulus axis (MATLAB's numbering)
    repetition   1-based index along Din's repetition axis
    onset_s      optional: the sound's onset in session time (s); without it the trials follow
                 each other back to back, as the acquisition ran
    sound        optional: the stimulus' sound file (relative to SOUNDS, suffix optional); without
                 it, param.snd.SoundList names the stimuli when it holds one name per stimulus

The session is rebuilt from it: each presentation's trial window (all of Din's time points, e.g.
20 frames at 1 frame/s: 7 s of silence, 10 s of sound, 3 s of silence) is placed in played order
(from onset_s minus the pre-silence when onsets are given; frames between windows are NaN), and its
event starts after the pre-silence and lasts the sound's length (or ``sound_duration_s``).
Presentations the table does not name are left out.

Every slice imported together shares the one table, and becomes one session of one subject; slices
heard in different orders are imported one at a time (``hemispheres``, ``slices``, ``subject``),
each with its own table. Voxel coordinates are (row, column, slice - 1) of the pixel, times
``voxel_size``; each voxel's region label is its hemisphere. The session's frames are held in
memory as float32 while it is written (frames x voxels x 4 bytes).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..store import MAX_NONFINITE_FRACTION
from .matlab import field, load_variable, strings, variable_shape
from .sounds import SoundFolder, read_sounds
from .tables import Table, counted_repeats
from .target import ImportSummary, check_target, new_store

WHY_ORDER = ("no presentation-order table (--order, order=): this layout's arrays are ordered by "
             "stimulus and repetition, not by time, so the order in which the animal heard the sounds "
             "is lost, and the replay must feed the learning network the sounds in that order (what it "
             "learns, and so every score, depends on it); give a CSV with one row per presentation, in "
             "the order heard, with the columns stimulus and repetition (1-based indices into Din's "
             "axes) and optionally onset_s and sound")


@dataclass(frozen=True)
class FusLayout:
    """Names of the files' variables and fields; each is a ``--kebab-case`` option of the command.

    >>> FusLayout(data_var="D").option("data_var")
    '--data-var (FusLayout.data_var)'
    """

    data_var: str = "Din"
    param_suffix: str = "_Anat&Param"
    param_var: str = "param"
    mask_field: str = "msk.ManualMask"
    pre_silence_field: str = "exp.PreStimSilence"
    names_field: str = "snd.SoundList"

    @staticmethod
    def option(key: str) -> str:
        return f"--{key.replace('_', '-')} (FusLayout.{key})"


def place_presentations(block, stimulus, repetition, starts, out):
    """Write each presentation's trial window of ``block`` (time, stimulus, repetition, voxel) into
    the rows of ``out`` (frame, voxel) from ``starts[p]`` on, for 0-based ``stimulus[p]`` and
    ``repetition[p]``: the stimulus-major arrays laid out in played order.

    >>> block = np.arange(2 * 2 * 2 * 1, dtype=np.float32).reshape(2, 2, 2, 1)
    >>> out = np.full((5, 1), np.nan, np.float32)
    >>> place_presentations(block, [1, 0], [0, 1], [0, 3], out)
    >>> out.ravel().tolist()
    [2.0, 6.0, nan, 1.0, 5.0]
    """
    n_t = block.shape[0]
    rows = (np.asarray(starts)[:, None] + np.arange(n_t)).ravel()
    # block[:, s, r] gathers (time, presentation, voxel); presentation-major rows follow `rows`
    out[rows] = np.asarray(block[:, stimulus, repetition], dtype=np.float32).transpose(1, 0, 2).reshape(
        len(rows), -1)


def _slice_files(data_dir: Path, hemi: str, wanted) -> dict[int, Path]:
    pattern = re.compile(rf"{re.escape(hemi)}_(\d+)\.mat")
    found = {int(m.group(1)): p for p in data_dir.iterdir() if (m := pattern.fullmatch(p.name))}
    if not found:
        raise FileNotFoundError(f"no slice files {hemi}_<k>.mat in {str(data_dir)!r} for hemisphere {hemi!r}")
    if wanted is None:
        return dict(sorted(found.items()))
    missing = [k for k in wanted if k not in found]
    if missing:
        raise ValueError(f"Invalid value for the 'slices' parameter. Allowed values are slices of "
                         f"{hemi} ({sorted(found)}), but got {missing} instead.")
    return {int(k): found[int(k)] for k in wanted}


def _hemispheres(data_dir: Path, wanted, layout: FusLayout) -> list[str]:
    suffix = layout.param_suffix + ".mat"
    found = sorted(p.name[: -len(suffix)] for p in data_dir.glob("*" + suffix))
    if not found:
        raise FileNotFoundError(f"no hemisphere files <H>{suffix} in {str(data_dir)!r}; name their "
                                f"suffix with {layout.option('param_suffix')}")
    missing = [h for h in (wanted or []) if h not in found]
    if missing:
        raise ValueError(f"Invalid value for the 'hemispheres' parameter. Allowed values are {found}, "
                         f"but got {missing} instead.")
    return list(wanted) if wanted else found


def _order(order, n_stim: int, n_rep: int) -> tuple[Table, np.ndarray, np.ndarray]:
    """The table, and 0-based stimulus and repetition of each presentation, checked."""
    table = Table(order, required=["stimulus", "repetition"], what="order table")
    if not len(table):
        raise ValueError(f"order table {table.path.name}: no presentations (only a header)")
    stim, rep = table.integers("stimulus") - 1, table.integers("repetition") - 1
    for values, column, n in ((stim, "stimulus", n_stim), (rep, "repetition", n_rep)):
        for i in np.flatnonzero((values < 0) | (values >= n))[:1]:
            table.fail(i, column, f"{values[i] + 1} is outside 1-{n} (Din has {n} along this axis; "
                                  "indices are 1-based, as in MATLAB)")
    pairs: dict = {}
    for i, pair in enumerate(zip(stim.tolist(), rep.tolist())):
        if pair in pairs:
            table.fail(i, "repetition", f"stimulus {pair[0] + 1}, repetition {pair[1] + 1} is presented "
                                        f"again (first at row {pairs[pair] + 2}); each is heard once")
        pairs[pair] = i
    return table, stim, rep


def _names(table: Table, stim: np.ndarray, param, where: str, layout: FusLayout, n_stim: int) -> dict:
    """Sound name of each stimulus presented: the table's ``sound`` column or the params' list."""
    if "sound" in table:
        names: dict = {}
        for i, (s, name) in enumerate(zip(stim.tolist(), table.strings("sound"))):
            if names.setdefault(s, name) != name:
                table.fail(i, "sound", f"stimulus {s + 1} is {name!r} here but {names[s]!r} above; one "
                                       "stimulus has one sound")
        return names
    hint = (f"; add a 'sound' column to the order table {table.path.name} naming each stimulus' file, "
            f"or name the list with {layout.option('names_field')}")
    try:
        listed = strings(field(param, layout.names_field, where, layout.option("names_field")))
    except ValueError as err:
        raise ValueError(f"{err}{hint}") from None
    if len(listed) != n_stim:
        raise ValueError(f"{where}: {layout.param_var}.{layout.names_field} names {len(listed)} sounds, but "
                         f"Din has {n_stim} stimuli{hint}")
    return {s: listed[s] for s in np.unique(stim).tolist()}


def import_fus(out, data_dir, sounds, order=None, *, hemispheres=None, slices=None, subject=None,
               frame_rate_hz: float = 1.0, pre_silence_s: float | None = None,
               sound_duration_s: float | None = None, voxel_size=(1.0, 1.0, 1.0),
               sample_rate: int | None = None, layout: FusLayout = FusLayout(),
               force: bool = False) -> ImportSummary:
    """Write the recording store ``out`` from a Landemard-layout folder (module docstring).

    ``order`` is the presentation-order table (required); ``hemispheres`` and ``slices`` (slice
    numbers k of ``<H>_<k>.mat``) choose the files, all by default; ``subject`` defaults to the
    hemisphere names joined by "-". ``pre_silence_s`` defaults to the params' PreStimSilence
    (frames) over ``frame_rate_hz``.
    """
    out = check_target(out, force)
    if order is None:
        raise ValueError(WHY_ORDER)
    if not frame_rate_hz > 0:
        raise ValueError(f"Invalid value for the 'frame_rate_hz' parameter. Allowed values are positive "
                         f"numbers (Hz), but got {frame_rate_hz!r} instead.")
    for name, value in (("pre_silence_s", pre_silence_s), ("sound_duration_s", sound_duration_s)):
        if value is not None and not value >= (0 if name == "pre_silence_s" else 1e-9):
            raise ValueError(f"Invalid value for the {name!r} parameter. Allowed values are "
                             f"{'non-negative' if name == 'pre_silence_s' else 'positive'} numbers "
                             f"(s) or None, but got {value!r} instead.")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"fUS data folder {str(data_dir)!r} is not a folder")
    hemis = _hemispheres(data_dir, hemispheres, layout)
    files = [(h, k, p) for h in hemis for k, p in _slice_files(data_dir, h, slices).items()]
    params = {h: load_variable(data_dir / f"{h}{layout.param_suffix}.mat", layout.param_var,
                               layout.option("param_var"), squeeze=True) for h in hemis}
    where = {h: f"{h}{layout.param_suffix}.mat" for h in hemis}

    # Shapes first, from the files' directories: every mistake is found before any data is read.
    shapes, n_voxels, coords, regions = [], [], [], []
    for h, k, path in files:
        shape = variable_shape(path, layout.data_var, layout.option("data_var"))
        shape = shape + (1,) if len(shape) == 3 else shape  # MATLAB drops a trailing singleton axis
        if len(shape) != 4 or (shapes and shape[:3] != shapes[0][:3]):
            expected = f", like {files[0][2].name}'s {shapes[0][:3]}" if shapes else ""
            raise ValueError(f"{path.name}: {layout.data_var} has shape {shape}; expected (time, stimulus, "
                             f"repetition, voxel){expected}")
        shapes.append(shape)
        mask = np.asarray(field(params[h], layout.mask_field, where[h], layout.option("mask_field")), bool)
        mask = mask[:, :, None] if mask.ndim == 2 else mask  # one slice: MATLAB dropped the axis
        if mask.ndim != 3 or k > mask.shape[2]:
            raise ValueError(f"{where[h]}: {layout.mask_field} has shape {mask.shape}, which has no slice {k} "
                             f"for {path.name}; expected (x, y, n_slices)")
        cols, rows = np.nonzero(mask[:, :, k - 1].T)  # transposed: MATLAB's column-major order
        if len(rows) != shape[3]:
            raise ValueError(f"{path.name}: {layout.data_var} has {shape[3]} voxels, but {layout.mask_field} "
                             f"marks {len(rows)} pixels in slice {k} of {where[h]}; they must match")
        coords.append(np.stack([rows, cols, np.full_like(rows, k - 1)], axis=1) * np.asarray(voxel_size))
        regions += [h] * len(rows)
        n_voxels.append(shape[3])
    n_t, n_stim, n_rep, _ = shapes[0]

    table, stim, rep = _order(order, n_stim, n_rep)
    names = _names(table, stim, params[hemis[0]], where[hemis[0]], layout, n_stim)
    folder = SoundFolder(sounds, "sound folder")
    first_row = {s: i for i, s in reversed(list(enumerate(stim.tolist())))}
    used = sorted(names)
    paths = [folder.find(names[s], f"order table {table.path.name}, row {first_row[s] + 2}") for s in used]
    waves, rate, stim_names, categories = read_sounds(folder, paths, sample_rate)
    index = {s: j for j, s in enumerate(used)}

    pre_s = pre_silence_s
    if pre_s is None:
        pre = [_number(field(params[h], layout.pre_silence_field, where[h], layout.option("pre_silence_field")),
                       f"{where[h]}: {layout.pre_silence_field}") for h in hemis]
        if len(set(pre)) > 1:
            raise ValueError(f"hemispheres {hemis} have different {layout.pre_silence_field} ({pre}); import "
                             "them one at a time, or give pre_silence_s (--pre-silence)")
        pre_s = pre[0] / frame_rate_hz  # PreStimSilence counts frames (the authors' code indexes with it)
    window_s = n_t / frame_rate_hz
    lengths = {s: len(waves[index[s]]) / rate for s in used}
    durations = np.array([sound_duration_s or lengths[s] for s in stim.tolist()])
    for i in np.flatnonzero(pre_s + durations > window_s + 1e-9)[:1]:
        table.fail(i, "stimulus", f"its sound lasts {durations[i]:g} s, but the trial window of {window_s:g} s "
                                  f"({n_t} frames at {frame_rate_hz:g} Hz) leaves {window_s - pre_s:g} s after "
                                  f"the {pre_s:g} s of silence; give sound_duration_s (--sound-duration) or "
                                  "pre_silence_s (--pre-silence)")
    starts, onsets = _timeline(table, pre_s, frame_rate_hz, n_t)
    n_frames = int(starts[-1]) + n_t

    summary = ImportSummary(out, subjects=1, sessions=1, events=len(stim), stimuli=len(used))
    left_out = n_stim * n_rep - len(stim)
    if left_out:
        summary.notes.append(f"{left_out} of the {n_stim * n_rep} presentations in {layout.data_var} are "
                             f"not in the order table and were left out")
    subject = subject or "-".join(hemis)
    with new_store(out, "fus", force) as writer:
        writer.write_stimuli(waves, rate, stim_names, categories)
        writer.attrs["import"] = {"importer": "fus-landemard", "order": table.path.name,
                                  "files": [p.name for _, _, p in files], "pre_silence_s": pre_s,
                                  "layout": asdict(layout)}
        writer.write_voxels(subject, np.concatenate(coords), regions)
        frames = np.full((n_frames, sum(n_voxels)), np.nan, dtype=np.float32)
        v0 = 0
        for (h, k, path), n in zip(files, n_voxels):  # one slice in memory at a time
            block = np.asarray(load_variable(path, layout.data_var, layout.option("data_var")))
            place_presentations(block.reshape(block.shape[:3] + (n,)), stim, rep, starts, frames[:, v0:v0 + n])
            v0 += n
        writer.write_session(subject, "0", frames, frame_rate_hz, dict(
            onset_s=onsets, stimulus=[index[s] for s in stim.tolist()], duration_s=durations,
            repeat=counted_repeats(stim)))
    return summary


def _number(value, what: str) -> float:
    value = np.asarray(value)
    if value.size != 1 or not np.issubdtype(value.dtype, np.number):
        raise ValueError(f"{what} is {value!r}, not one number; give pre_silence_s (--pre-silence)")
    return float(value.ravel()[0])


def _timeline(table: Table, pre_s: float, rate: float, n_t: int) -> tuple[np.ndarray, np.ndarray]:
    """First frame of each trial window, and each sound's onset (s), in played order."""
    n = len(table)
    if "onset_s" not in table:  # back to back, as the acquisition ran
        starts = np.arange(n) * n_t
        return starts, starts / rate + pre_s
    onsets = table.numbers("onset_s")
    starts = np.round((onsets - pre_s) * rate).astype(np.int64)
    for i in np.flatnonzero(starts < 0)[:1]:
        table.fail(i, "onset_s", f"{onsets[i]:g} s leaves no room for the {pre_s:g} s of silence before the "
                                 "sound; onsets are the sounds' starts in session time")
    for i in np.flatnonzero(np.diff(starts) < n_t)[:1]:
        table.fail(i + 1, "onset_s", f"{onsets[i + 1]:g} s comes less than one trial window ({n_t / rate:g} s) "
                                     f"after the onset above ({onsets[i]:g} s); rows are presentations in "
                                     "the order heard")
    n_frames, gaps = starts[-1] + n_t, starts[-1] + n_t - n * n_t
    if gaps > MAX_NONFINITE_FRACTION * n_frames:
        raise ValueError(f"order table {table.path.name}: its onsets leave {gaps} of {n_frames} frames between "
                         f"trial windows unrecorded (NaN), more than {MAX_NONFINITE_FRACTION:.0%}, which would "
                         "mask every voxel; drop the onset_s column to place the trials back to back")
    return starts, onsets
