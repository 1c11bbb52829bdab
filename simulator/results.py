"""The results store (Zarr v3): one group per run, per-trial records and prequential scores.

```
results.zarr/  attrs: format="cortexreplay.results", version, scenario (as read), compare (its
                pairs of variant names, patterns expanded), score_formula
  runs/<variant>/<subject>/seed-<n>/   attrs: run_id, variant, subject, seed, config (resolved),
                                              layers, delta_w_layers, store, provenance, complete
    trials/<field>     (n_trials,) per-trial records: stimulus, event, repeat, loss, ...
    trials/delta_w     (n_trials, n_delta_w_layers) ||dW|| per layer of the model (delta_w_layers)
    trials/trial_r     (n_trials, n_layers)   voxel-mean r of the trial, predicted before learning
    trials/pooled/<layer> (n_trials, n_features) the sound's activations averaged over its frames
    scores/r, scores/r2          (n_layers, n_voxels) prequential, pooled over scored trials
    scores/alpha                 (n_layers, n_voxels) each voxel's ridge penalty at the end
    scores/drift                 (n_detections, 3) rows (layer index, trial, voxel): where the
                                 Page-Hinkley test on a voxel's 1 − R² per trial fired
    scores/event_stats           (n_layers, n_events, 6, n_voxels) per recorded event: the sums
                                 n, Σp, Σo, Σp², Σo², Σpo over its scored frames (encoders.scores)
    heldout/sse                  brain-aligned runs: (network, heldout_trial, voxel) Σ(y − p)² per
                                 held-out trial of the aligned, frozen+head and random+head networks
    heldout/{sum_y,sum_y2,count} (heldout_trial, voxel) Σy, Σy², n of those trials' finite frames;
                                 heldout/{stimulus,event} name them (encoders.heldout; run attr
                                 alignment: networks, sessions, training history)
    probe/correct                (probe_layer, probe_sound) the downstream probe's held-out sounds
                                 classified right, per layer; probe/cv_accuracy, probe/label (run
                                 attr probe_summary: the chosen layer, accuracy, interval)
  ceilings/<subject>   (n_voxels,) noise ceiling of the subject's replayed session; attrs formula,
                                   session, n_sounds, n_repeats (encoders.ceiling)
  brain_drift/<subject> (n_stimuli,) 1 − corr of the brain's patterns between a sound's first two
                                   presentations (simulator.alignment)
  voxels/<subject>     (n_voxels, 3) the voxels' coordinates, copied from the recording (for maps)
```
Every array has Zarr v3 ``dimension_names``, so xarray opens each group with named dimensions;
a run's ``trials`` and ``scores`` also hold label arrays, which xarray reads as coordinates:
``layer`` (the scored layers, attr ``layers``), ``delta_w_layer`` (every layer of the model, attr
``delta_w_layers``), ``stat`` (the sums of ``event_stats``) and ``field`` (the columns of
``drift``); ``read_runs`` leaves them out. For example::

    import xarray as xr
    run = "runs/continuous/sub-01/seed-0"
    scores = xr.open_zarr("results.zarr", group=f"{run}/scores", consolidated=False)
    scores.r.sel(layer="layer_2").mean("voxel")       # the run's score at layer_2
    ceiling = xr.open_zarr("results.zarr", group="ceilings", consolidated=False)["sub-01"]

``simulator.export.open_run`` gives a run's trials and scores in one Dataset; ``cortexreplay
export`` writes the per-run and per-trial tables as CSV or Parquet (simulator.export).

A run is written by one process alone (the parent of a replay's workers, or a live run as its trials
complete), and marked ``complete`` last.
"""
from __future__ import annotations

import importlib.metadata
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr

from encoders.scores import STAT_NAMES

FORMAT = "cortexreplay.results"
VERSION = 1
SCORE_FORMULA = ("prequential Pearson r per voxel over all frames of trials after the warm-up, "
                 "each predicted before the encoder learned from it: r = (n Σpo − Σp Σo) / "
                 "sqrt((n Σpp − Σp²)(n Σoo − Σo²)); score = mean over voxels at the best layer")
DIMS = {"r": ("layer", "voxel"), "r2": ("layer", "voxel"), "alpha": ("layer", "voxel"),
        "drift": ("detection", "field"),
        "event_stats": ("layer", "event", "stat", "voxel"),
        # ||dW|| covers every layer of the model, the encoder only the scored ones: two dimensions,
        # or a run scoring some layers would not open in xarray (conflicting sizes of "layer").
        "delta_w": ("trial", "delta_w_layer"), "trial_r": ("trial", "layer"),
        # heldout/: a brain-aligned run's sums per held-out trial (simulator.brain_tuning)
        "sse": ("network", "heldout_trial", "voxel"), "sum_y": ("heldout_trial", "voxel"),
        "sum_y2": ("heldout_trial", "voxel"), "count": ("heldout_trial", "voxel"),
        "heldout/stimulus": ("heldout_trial",), "heldout/event": ("heldout_trial",),
        # probe/: the downstream linear probe (simulator.probe)
        "correct": ("probe_layer", "probe_sound"), "cv_accuracy": ("probe_layer",),
        "label": ("probe_sound",)}
SECTIONS = ("trials", "scores", "heldout", "probe")  # a run's groups of arrays
DRIFT_FIELDS = ("layer", "trial", "voxel")  # the columns of scores/drift
# The label arrays (xarray's coordinates) of a run's dimensions: labels named by a run attribute,
# and fixed ones.
COORD_ATTRS = {"layer": "layers", "delta_w_layer": "delta_w_layers"}
FIXED_COORDS = {"stat": STAT_NAMES, "field": DRIFT_FIELDS,
                "network": ("brain-aligned", "frozen", "random")}  # simulator.modes.HELDOUT_NETWORKS
COORDS = (*COORD_ATTRS, *FIXED_COORDS)


INT_FIELDS = ("event", "stimulus", "repeat", "skipped_steps", "skipped_update")


def row_dtype(name: str):
    """The dtype the store keeps a per-trial record of ``trials/<name>`` in."""
    return np.int64 if name in INT_FIELDS else np.float32 if name.startswith("pooled/") \
        else np.float64


class ResultsError(ValueError):
    """A results store that cannot be used as asked."""


@dataclass
class RunResult:
    """Everything one run produced (built in a worker, written by the parent)."""

    run_id: str
    attrs: dict
    trials: dict[str, np.ndarray]
    scores: dict[str, np.ndarray]
    sections: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # heldout, probe


def provenance() -> dict:
    versions = {}
    for pkg in ("cortexreplay", "torch", "transformers", "numpy", "zarr", "pyzmq", "scikit-learn"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"versions": versions, "python": platform.python_version(), "platform": platform.platform()}


def open_results(path: str | Path, scenario: dict | None = None, compare=None):
    """Open (creating if needed) a results store for writing; ``scenario`` is the scenario as
    read, ``compare`` its comparisons resolved to pairs of variant names (patterns expanded)."""
    path = Path(path)
    if path.exists() and not (path / "zarr.json").exists():
        raise ResultsError(f"{path} exists and is not a results store; choose another --results")
    root = zarr.open_group(str(path), mode="a")
    fmt = root.attrs.get("format")
    if fmt is None:
        root.attrs.update({"format": FORMAT, "version": VERSION, "score_formula": SCORE_FORMULA,
                           "stat_names": list(STAT_NAMES)})
    elif fmt != FORMAT:
        raise ResultsError(f"{path} is a {fmt!r} store, not a results store; choose another --results")
    if scenario is not None:
        root.attrs["scenario"] = scenario
    if compare is not None:
        root.attrs["compare"] = [list(pair) for pair in compare]
    return root


def completed_config(root, run_id: str) -> dict | None:
    """The resolved config of a finished run in the store, or None."""
    try:
        group = root[f"runs/{run_id}"]
    except KeyError:
        return None
    return group.attrs.get("config") if group.attrs.get("complete") else None


def write_run(root, result: RunResult) -> None:
    """Write one run's group, replacing an unfinished or forced-over one."""
    writer = RunWriter(root, result.run_id, result.attrs)
    for name, value in result.trials.items():
        writer.write("trials", name, value)
    for section, arrays in result.sections.items():
        for name, value in arrays.items():
            writer.write(section, name, value)
    writer.finish(result.scores)


class RunWriter:
    """One run's group, written in parts: whole arrays (`write`), or trial by trial as a live run
    goes (`append`); ``complete`` is set by `finish`, after the scores, so a reader never takes
    a run that is still being written (or was cut short) for a finished one."""

    CHUNK_TRIALS = 256  # rows per chunk of an appended array: a live run writes one per trial

    def __init__(self, root, run_id: str, attrs: dict):
        key = f"runs/{run_id}"
        if key in root:  # an unfinished or forced-over run
            del root[key]
        self.group = root.require_group(key)
        self.group.attrs.update({**attrs, "complete": False})
        self._appended: dict[str, zarr.Array] = {}

    def write(self, section: str, name: str, value) -> None:
        value = np.asarray(value)
        arr = self.group.create_array(f"{section}/{name}", shape=value.shape, dtype=value.dtype,
                                      dimension_names=_dims(name, value.ndim, section))
        arr[...] = value

    def append_trial(self, record: dict) -> None:
        """Add one trial's ``{field: value}`` to the ``trials/`` arrays."""
        for name, value in record.items():
            self.append(name, value)

    def append(self, name: str, row) -> None:
        """Add one trial's ``row`` (a scalar or a 1-D array) to ``trials/<name>``."""
        row = np.asarray(row, dtype=row_dtype(name))[None]
        arr = self._appended.get(name)
        if arr is None:
            arr = self.group.create_array(
                f"trials/{name}", shape=(0,) + row.shape[1:], dtype=row.dtype,
                chunks=(self.CHUNK_TRIALS,) + row.shape[1:], dimension_names=_dims(name, row.ndim))
            self._appended[name] = arr
        arr.append(row, axis=0)

    def finish(self, scores: dict, attrs: dict | None = None) -> None:
        for name, value in scores.items():
            self.write("scores", name, value)
        self.group.attrs.update(attrs or {})
        _write_coords(self.group)
        self.group.attrs["complete"] = True


def _dims(name: str, ndim: int, section: str = "trials") -> tuple:
    if f"{section}/{name}" in DIMS:
        return DIMS[f"{section}/{name}"]
    if name.startswith("pooled/"):  # layers differ in width: one feature dimension per layer
        return ("trial", f"{name.split('/', 1)[1]}_feature")[:ndim]
    return DIMS.get(name, ("trial",) + tuple(f"dim_{i}" for i in range(1, ndim)))[:ndim]


def _write_coords(group) -> None:
    """A label array for each dimension of COORDS that the run's ``trials`` or ``scores`` use,
    where the labels match its length (xarray reads them as coordinates)."""
    labels = {**{dim: group.attrs.get(attr) for dim, attr in COORD_ATTRS.items()}, **FIXED_COORDS}
    for section in SECTIONS:
        if section not in group:
            continue
        sizes = {dim: n for _, a in group[section].arrays()
                 for dim, n in zip(a.metadata.dimension_names or (), a.shape)}
        for dim, names in labels.items():
            if names is not None and sizes.get(dim) == len(names):
                arr = group[section].create_array(dim, shape=(len(names),), dtype=str,
                                                  dimension_names=(dim,), overwrite=True)
                arr[...] = np.array(names, dtype=str)


def run_groups(path: str | Path) -> list:
    """The zarr groups of every complete run of a results store, in order of run id."""
    path = Path(path)
    if not (path / "zarr.json").exists():
        raise ResultsError(f"no results store at {path} (make one with 'cortexreplay run')")
    root = zarr.open_group(str(path), mode="r")
    if root.attrs.get("format") != FORMAT:
        raise ResultsError(f"{path} is not a results store (format {root.attrs.get('format')!r})")
    if "runs" not in root:
        return []
    return [run for _, group in sorted(root["runs"].groups())
            for _, subject in sorted(group.groups())
            for _, run in sorted(subject.groups()) if run.attrs.get("complete")]


def read_runs(path: str | Path) -> list[dict]:
    """Every complete run: its attrs plus ``trials`` and ``scores`` (and the ``heldout`` and
    ``probe`` sections of the runs that have them) as numpy arrays."""
    return [{**dict(run.attrs), **{section: _arrays(run[section]) for section in SECTIONS
                                   if section in run}}
            for run in run_groups(path)]


def _arrays(group, prefix: str = "") -> dict[str, np.ndarray]:
    """Every array under ``group``, nested ones named by their path (``pooled/layer_1``); not the
    label arrays (COORDS)."""
    out = {f"{prefix}{k}": a[...] for k, a in group.arrays()
           if prefix or k not in COORDS}
    for k, sub in group.groups():
        out.update(_arrays(sub, f"{prefix}{k}/"))
    return out


def results_attrs(path: str | Path) -> dict:
    """The root attributes of a results store."""
    return dict(zarr.open_group(str(path), mode="r").attrs)


def write_ceiling(root, subject: str, ceiling: np.ndarray, attrs: dict) -> None:
    """The noise ceiling per voxel of one subject (``ceilings/<subject>``), with its formula."""
    _write_subject_array(root, f"ceilings/{subject}", ceiling, ("voxel",), attrs)


def write_brain_drift(root, subject: str, drift: np.ndarray, attrs: dict) -> None:
    """The brain's drift between the first two presentations of each sound (``brain_drift/<subject>``,
    NaN for sounds heard once)."""
    _write_subject_array(root, f"brain_drift/{subject}", drift, ("stimulus",), attrs)


def write_voxel_coords(root, subject: str, coords: np.ndarray) -> None:
    """The voxels' coordinates of one subject (``voxels/<subject>``), for voxel maps."""
    _write_subject_array(root, f"voxels/{subject}", np.asarray(coords, dtype=np.float32),
                         ("voxel", "axis"), {})


def _write_subject_array(root, key: str, values: np.ndarray, dims, attrs: dict) -> None:
    arr = root.create_array(key, shape=values.shape, dtype=values.dtype, dimension_names=dims,
                            overwrite=True)
    arr[...] = values
    arr.attrs.update(attrs)


def read_subject_arrays(path: str | Path, group: str) -> dict[str, np.ndarray]:
    """``{subject: array}`` of ``ceilings``, ``brain_drift`` or ``voxels`` (empty if none)."""
    root = zarr.open_group(str(path), mode="r")
    if group not in root:
        return {}
    return {name: arr[...] for name, arr in root[group].arrays()}
