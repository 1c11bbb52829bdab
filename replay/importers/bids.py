"""fMRI in BIDS: NIfTI BOLD runs, their events.tsv and sidecar JSON, through nibabel and nilearn.

The layout read (BIDS 1.x)::

    ROOT/sub-<s>/[ses-<x>/]func/sub-<s>[_ses-<x>]_task-<t>[_run-<n>]_bold.nii[.gz]
        ... same name ..._events.tsv   onset, duration (s), stim_file (relative to ROOT/stimuli/)
    *_bold.json                        RepetitionTime (s), by BIDS inheritance: every sidecar from
                                       ROOT down to the run's folder whose entities the run has,
                                       the nearer ones overriding
    ROOT/stimuli/                      the sound files

Each BIDS subject becomes a subject ("sub-01") and each of its runs a session, named after the
run's entities other than sub (task only when several tasks are imported): "ses-01_run-2".
Events without a stim_file (n/a) are not sounds and are left out; the others are sorted by onset;
a duration of n/a is the sound's length, and an event that runs past the last volume is cut at it.
Frames are the volumes, at 1 / RepetitionTime Hz.

Voxels, chosen per subject:

- ``mask`` (NIfTI on the BOLD grid): its non-zero voxels (nilearn's NiftiMasker); coordinates in
  the image's world space (mm, through its affine); region "mask".
- ``atlas`` (NIfTI of integer labels on the BOLD grid): one target per label, the mean of its
  voxels (NiftiLabelsMasker), at its centroid; region names from ``atlas_labels`` (a TSV with
  index and name columns, as BIDS' dseg.tsv), else "label-<n>".
- neither: every voxel with a non-zero mean over the subject's first run (the brain, where the
  scanner's background is zero); region "brain".

A ``mask`` or ``atlas`` path may hold ``{subject}`` (the label without "sub-"): one file per
subject. Neither is resampled silently: one on another grid (shape or affine) is refused; resample
it first (nilearn.image.resample_to_img with interpolation="nearest").
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .sounds import SoundFolder, read_sounds
from .tables import MISSING, Table, counted_repeats
from .target import ImportSummary, check_target, new_store


def _entities(name: str) -> dict[str, str]:
    """BIDS key-value entities of a file name ("sub-01_task-a_bold.nii.gz" -> sub, task)."""
    return dict(part.split("-", 1) for part in name.split("_")[:-1] if "-" in part)


def _label(value: str, key: str) -> str:
    return str(value).removeprefix(f"{key}-")


@dataclass
class _Run:
    path: Path
    entities: dict
    subject: str   # "sub-01"
    tr: float
    shape: tuple
    affine: np.ndarray
    events: Table
    session: str = ""


def _load(path: Path, what: str):
    import nibabel

    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    try:
        return nibabel.load(path)
    except Exception as err:  # nibabel's ImageFileError and the decoders' errors
        raise ValueError(f"{path.name}: cannot read it as NIfTI ({' '.join(str(err).split())})") from None


def _repetition_time(root: Path, bold: Path, entities: dict) -> float:
    """RepetitionTime by BIDS inheritance: sidecars from the root down, nearer ones overriding."""
    sidecar, seen = {}, []
    folders = [root] + [root.joinpath(*bold.parent.relative_to(root).parts[:i + 1])
                        for i in range(len(bold.parent.relative_to(root).parts))]
    for folder in folders:
        candidates = [p for p in folder.glob("*_bold.json")
                      if _entities(p.name).items() <= entities.items()]
        for path in sorted(candidates, key=lambda p: len(_entities(p.name))):
            try:
                sidecar.update(json.loads(path.read_text()))
            except ValueError as err:
                raise ValueError(f"{path.name}: not valid JSON ({' '.join(str(err).split())})") from None
            seen.append(path.name)
    tr = sidecar.get("RepetitionTime")
    if not isinstance(tr, (int, float)) or isinstance(tr, bool) or not tr > 0:
        beside = bold.name[: bold.name.rindex("_bold")] + "_bold.json"
        looked = f"read {seen}" if seen else f"no sidecar found; BIDS puts it beside the run as {beside}"
        problem = "no RepetitionTime" if tr is None else f"RepetitionTime {tr!r} is not a positive number"
        raise ValueError(f"{bold.name}: {problem} in its sidecar JSON ({looked}); add "
                         "\"RepetitionTime\": <seconds between volumes>, as BIDS requires")
    return float(tr)


def _find_runs(root: Path, subjects, tasks) -> list[_Run]:
    bolds = sorted(p for p in root.glob("sub-*/**/func/*_bold.nii*") if p.name.endswith((".nii", ".nii.gz")))
    if not bolds:
        raise FileNotFoundError(f"no BOLD runs (sub-*/[ses-*/]func/*_bold.nii[.gz]) under {str(root)!r}")
    found = [(p, _entities(p.name)) for p in bolds]
    all_subjects = sorted({e.get("sub", "") for _, e in found})
    all_tasks = sorted({e.get("task", "") for _, e in found})
    for key, prefix, asked, allowed in (("subjects", "sub", subjects, all_subjects),
                                        ("tasks", "task", tasks, all_tasks)):
        bad = [v for v in asked or [] if _label(v, prefix) not in allowed]
        if bad:
            raise ValueError(f"Invalid value for the {key!r} parameter. Allowed values are {allowed} "
                             f"(in {root.name}), but got {bad} instead.")
    subjects = {_label(s, "sub") for s in subjects} if subjects else set(all_subjects)
    tasks = {_label(t, "task") for t in tasks} if tasks else set(all_tasks)
    runs = []
    for path, ent in found:
        if ent.get("sub") not in subjects or ent.get("task") not in tasks:
            continue
        stem = path.name[: path.name.rindex("_bold")]
        events = path.with_name(stem + "_events.tsv")
        if not events.is_file():
            raise FileNotFoundError(f"{path.name}: no events file {events.name} beside it; the replay needs "
                                    "each run's sounds and onsets (choose the tasks that have them: tasks=)")
        table = Table(events, required=["onset", "duration"], what="events")
        header = _load(path, "BOLD run")
        if len(header.shape) != 4:
            raise ValueError(f"{path.name}: shape {header.shape}, expected 4-D (x, y, z, volume)")
        runs.append(_Run(path, ent, f"sub-{ent['sub']}", _repetition_time(root, path, ent), header.shape,
                         header.affine, table))
    used_tasks = {r.entities.get("task") for r in runs}
    for r in runs:  # sessions named after the run's entities; task only where it tells runs apart
        parts = [f"{k}-{v}" for k, v in r.entities.items() if k != "sub" and (k != "task" or len(used_tasks) > 1)]
        r.session = "_".join(parts) or f"task-{r.entities.get('task')}"
    return runs


def _events(run: _Run, folder: SoundFolder):
    """(onset, file, duration or NaN, source row) of the run's sound events, sorted by onset."""
    table = run.events
    sounds = table.strings("stim_file") if "stim_file" in table else [""] * len(table)
    keep = [i for i, f in enumerate(sounds) if f.lower() not in MISSING]
    onset, duration = table.numbers("onset")[keep], table.numbers("duration", missing=np.nan)[keep]
    files = [folder.find(sounds[i], f"events {table.path.name}, row {i + 2}") for i in keep]
    end = run.shape[3] * run.tr
    for j in np.flatnonzero((onset < 0) | (onset >= end))[:1]:
        table.fail(keep[j], "onset", f"{onset[j]:g} s is outside the run (0-{end:g} s: {run.shape[3]} volumes "
                                     f"of {run.tr:g} s); onsets count from the first volume")
    for j in np.flatnonzero(duration < 0)[:1]:
        table.fail(keep[j], "duration", f"{duration[j]:g} s is negative")
    order = np.argsort(onset, kind="stable")
    return onset[order], [files[j] for j in order], duration[order]


def _masker(run: _Run, mask, atlas, atlas_labels):
    """(masker, coords, regions) of a subject, on its first run's grid; the masker is a nilearn
    masker, or the boolean selection of the brain's voxels when there is no mask nor atlas."""
    import nibabel
    from nibabel.affines import apply_affine

    label = run.subject.removeprefix("sub-")
    path = Path(str(mask or atlas).replace("{subject}", label)) if (mask or atlas) else None
    if path is None:  # the brain: voxels with a non-zero mean over the first run
        mean = np.asarray(_load(run.path, "BOLD run").dataobj, dtype=np.float32).mean(axis=3)
        keep = np.isfinite(mean) & (mean != 0)
        if not keep.any():
            raise ValueError(f"{run.path.name}: every voxel's mean is zero or non-finite; give a mask")
        return keep, apply_affine(run.affine, np.argwhere(keep)), ["brain"] * int(keep.sum())
    what = "mask" if mask else "atlas"
    img = _load(path, what)
    if img.shape[:3] != run.shape[:3] or len(img.shape) > 3 and img.shape[3:] != (1,) * (len(img.shape) - 3):
        raise ValueError(f"{what} {path.name}: shape {img.shape}, but the BOLD run {run.path.name} has a "
                         f"{run.shape[:3]} grid; resample the {what} to it (nilearn.image.resample_to_img, "
                         "interpolation='nearest')")
    if not np.allclose(img.affine, run.affine, atol=1e-3):
        raise ValueError(f"{what} {path.name}: its affine differs from the BOLD run {run.path.name}'s (another "
                         f"space or orientation); resample the {what} to the run (nilearn.image.resample_to_img, "
                         "interpolation='nearest')")
    data = np.asarray(img.dataobj).reshape(run.shape[:3])
    from nilearn.maskers import NiftiLabelsMasker, NiftiMasker

    if mask:
        keep = data != 0
        if not keep.any():
            raise ValueError(f"mask {path.name}: no voxel is non-zero; it selects nothing")
        binary = nibabel.Nifti1Image(keep.astype(np.uint8), run.affine)  # NiftiMasker wants 0/1
        return NiftiMasker(mask_img=binary).fit(), apply_affine(run.affine, np.argwhere(keep)), \
            ["mask"] * int(keep.sum())
    if not np.array_equal(data, np.round(data)):
        raise ValueError(f"atlas {path.name}: holds non-integer values; an atlas labels each voxel with an "
                         "integer (0: background)")
    labels = np.unique(data[data != 0]).astype(np.int64)
    if not len(labels):
        raise ValueError(f"atlas {path.name}: every voxel is 0 (background); it has no parcels")
    centroids = np.stack([np.argwhere(data == v).mean(axis=0) for v in labels])  # a loop over parcels
    names = _label_names(atlas_labels, labels)
    masker = NiftiLabelsMasker(labels_img=nibabel.Nifti1Image(data.astype(np.int32), run.affine), strategy="mean")
    return masker.fit(), apply_affine(run.affine, centroids), names


def _label_names(path, labels) -> list[str]:
    if path is None:
        return [f"label-{v}" for v in labels]
    table = Table(path, required=["index", "name"], what="atlas labels")
    names = dict(zip(table.integers("index").tolist(), table.strings("name")))
    missing = [int(v) for v in labels if v not in names]
    if missing:
        raise ValueError(f"atlas labels {Path(path).name}: no name for label(s) {missing[:5]}; give one row "
                         "(index, name) per label of the atlas")
    return [names[int(v)] for v in labels]


def _frames(run: _Run, masker, n_targets: int) -> np.ndarray:
    img = _load(run.path, "BOLD run")
    if isinstance(masker, np.ndarray):  # the brain selection: plain numpy, nothing to fit
        return np.asarray(img.dataobj, dtype=np.float32)[masker].T.copy()
    with warnings.catch_warnings():
        # nilearn 0.14 warns that the boolean 'standardize' default will change; we never standardize
        warnings.simplefilter("ignore", FutureWarning)
        X = np.asarray(masker.transform(img), dtype=np.float32)
    if X.shape != (run.shape[3], n_targets):
        raise ValueError(f"{run.path.name}: the masker gave {X.shape} values, expected "
                         f"({run.shape[3]} volumes, {n_targets} voxels or parcels)")
    return X


def import_bids(out, root, *, subjects=None, tasks=None, mask=None, atlas=None, atlas_labels=None,
                sample_rate: int | None = None, force: bool = False) -> ImportSummary:
    """Write the recording store ``out`` (modality "fmri") from the BIDS dataset ``root``.

    ``subjects`` and ``tasks`` (labels, with or without "sub-"/"task-") choose the runs, all by
    default; ``mask`` or ``atlas`` choose the voxels (module docstring); ``sample_rate`` is the
    stored sounds' rate (default: the first sound's).
    """
    out = check_target(out, force)
    if mask is not None and atlas is not None:
        raise ValueError("give a mask or an atlas, not both: an atlas already selects its parcels' voxels")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"BIDS dataset {str(root)!r} is not a folder")
    runs = _find_runs(root, subjects, tasks)
    folder = SoundFolder(root / "stimuli", "BIDS stimuli folder")
    events = [_events(r, folder) for r in runs]
    files = sorted({f for _, fs, _ in events for f in fs})
    if not files:
        raise ValueError(f"no run of {root.name} has events with a stim_file (the sound, relative to "
                         "stimuli/, as BIDS names it); nothing to replay")
    waves, rate, names, categories = read_sounds(folder, files, sample_rate)
    index = {f: i for i, f in enumerate(files)}
    summary = ImportSummary(out, stimuli=len(files))
    planned, first, sessions = [], {}, set()
    for run, (onset, fs, duration) in zip(runs, events):
        if not fs:
            summary.notes.append(f"{run.path.name}: no events with a stim_file (no sounds); not imported")
            continue
        ref = first.setdefault(run.subject, run)
        if run.shape[:3] != ref.shape[:3] or not np.allclose(run.affine, ref.affine, atol=1e-3):
            raise ValueError(f"{run.path.name}: its grid {run.shape[:3]} differs from {ref.path.name}'s "
                             f"{ref.shape[:3]} (shape or affine); runs of a subject share one grid")
        if (run.subject, run.session) in sessions:
            raise ValueError(f"{run.path.name}: two runs of {run.subject} would both be session "
                             f"{run.session!r}; import one task at a time (tasks=)")
        sessions.add((run.subject, run.session))
        end = run.shape[3] * run.tr
        lengths = np.array([len(waves[index[f]]) / rate for f in fs])
        duration = np.where(np.isnan(duration), lengths, duration)
        if (onset + duration > end).any():
            summary.notes.append(f"{run.path.name}: {int((onset + duration > end).sum())} event(s) run past the "
                                 "last volume; cut at it")
        stimulus = [index[f] for f in fs]
        planned.append((run, dict(onset_s=onset, stimulus=stimulus, duration_s=np.minimum(duration, end - onset),
                                  repeat=counted_repeats(stimulus))))

    with new_store(out, "fmri", force) as writer:
        writer.write_stimuli(waves, rate, names, categories)
        writer.attrs["import"] = {"importer": "bids", "dataset": root.name, "runs": [r.path.name for r, _ in planned],
                                  "mask": Path(str(mask)).name if mask else None,
                                  "atlas": Path(str(atlas)).name if atlas else None}
        maskers: dict = {}
        for run, ev in planned:
            if run.subject not in maskers:
                masker, coords, regions = _masker(run, mask, atlas, atlas_labels)
                writer.write_voxels(run.subject, coords, regions)
                maskers[run.subject] = (masker, len(regions))
            writer.write_session(run.subject, run.session, _frames(run, *maskers[run.subject]), 1.0 / run.tr, ev)
            summary.events += len(ev["stimulus"])
    summary.subjects, summary.sessions = len(maskers), len(planned)
    return summary
