"""Results taken elsewhere: a run as an xarray Dataset, and the per-run and per-trial tables.

``open_run`` merges a run's ``trials`` and ``scores`` (simulator.results) into one Dataset. Its
dimensions: ``trial``; ``layer``, the scored layers (labelled; ``r``, ``trial_r``, ...);
``delta_w_layer``, every layer of the model (labelled; ``delta_w``); ``voxel``; ``stat`` and
``field`` (labelled); ``detection``; one ``<layer>_feature`` per ``pooled_<layer>``; and
``recorded_event``, which is ``event_stats``' dimension ``event`` in the store, renamed so that
the trials' record ``event`` (the recorded event each trial replays) keeps its name: the per-trial
stats in replay order are ``ds.event_stats.isel(recorded_event=ds.event)``. The store's arrays
are read lazily (with dask where it is installed), so a run of 40 000 voxels opens at once.

``run_table`` has one row per complete run: its id, ``best_layer`` and ``score`` (there),
``score.<layer>`` at every scored layer, the counts, and every leaf of the resolved config as a
dotted column (``learning.lr``; lists as JSON text, so CSV and Parquet hold the same). A run's
score at a layer is its own: the mean over voxels of its prequential r (``scores/r``), voxels
with no score (masked, NaN) left out. It is the summary's score (simulator.summary) where a
variant has one run and no voxel is masked: the summary pools a variant's runs over the trials
scored in all of them, and counts a masked voxel as r = 0.
``trial_table`` has one row per run and trial: the run's id, ``trial`` (its place in the replay,
0 first), every per-trial record, and ``delta_w.<layer>`` and ``trial_r.<layer>``; not the
pooled features. ``export`` writes both as ``runs.<ext>`` and ``trials.<ext>``.
"""
from __future__ import annotations

import importlib
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from encoders.heldout import pooled_r2
from replay.checks import check_choice

from .results import COORD_ATTRS, COORDS, FIXED_COORDS, run_groups, results_attrs

FORMATS = ("csv", "parquet")
RUN_COLUMNS = ("run_id", "variant", "subject", "seed", "mode", "order")
COUNTS = ("n_events", "n_trials", "masked_voxels", "dropped_frames")
FIRST_FIELDS = ("event", "stimulus", "repeat")  # the trial's identity, before its records
LAYERED = {"delta_w": "delta_w_layers", "trial_r": "layers"}  # (n_trials, n_layers) records


def open_run(results, run_id: str) -> xr.Dataset:
    """One complete run's trials and scores as an xarray Dataset (see the module's docstring),
    its attributes as the Dataset's (nested ones, config and provenance, as JSON text)."""
    runs = {group.attrs["run_id"]: group for group in run_groups(results)}
    if run_id not in runs:
        raise ValueError(f"{results} has no complete run {run_id!r} (its complete runs: "
                         f"{', '.join(runs) or 'none'})")
    return _dataset(results, runs[run_id])


def open_runs(results) -> dict[str, xr.Dataset]:
    """``{run_id: open_run(results, run_id)}`` for every complete run, in order of run id."""
    return {group.attrs["run_id"]: _dataset(results, group) for group in run_groups(results)}


def _dataset(results, group) -> xr.Dataset:
    attrs = dict(group.attrs)
    key = group.path
    # delta_w is read on its own dimension: stores written before it had one call it "layer",
    # which clashes with trial_r's when some layers are not scored. The labels come from the
    # run's attributes, which stores written before the label arrays have too.
    trials = xr.open_zarr(str(results), group=f"{key}/trials", consolidated=False,
                          drop_variables=["delta_w", *COORDS])
    scores = xr.open_zarr(str(results), group=f"{key}/scores", consolidated=False,
                          drop_variables=list(COORDS))
    if "event" in scores.dims:
        scores = scores.rename_dims(event="recorded_event")
    extra = {}
    if "delta_w" in group["trials"]:
        extra["delta_w"] = (("trial", "delta_w_layer"), group["trials/delta_w"][...])
    if "pooled" in group["trials"]:
        for name, arr in group["trials/pooled"].arrays():
            extra[f"pooled_{name}"] = (("trial", f"{name}_feature"), arr[...])
    ds = xr.merge([trials, scores], combine_attrs="drop").assign(extra)
    labels = {**{dim: attrs.get(attr) for dim, attr in COORD_ATTRS.items()}, **FIXED_COORDS}
    ds = ds.assign_coords({dim: list(names) for dim, names in labels.items()
                           if names is not None and ds.sizes.get(dim) == len(names)})
    score_formula = results_attrs(results).get("score_formula")
    ds.attrs = simple_attrs(attrs)
    if score_formula:
        ds.attrs["score_formula"] = score_formula
    return ds


def simple_attrs(attrs: dict) -> dict:
    """Attributes as netCDF and Zarr take them: scalars and flat lists of scalars kept, anything
    else (nested tables, None) as JSON text.

    >>> simple_attrs({"seed": 0, "layers": ["cnn"], "config": {"learning": {"lr": 0.001}}})
    {'seed': 0, 'layers': ['cnn'], 'config': '{"learning": {"lr": 0.001}}'}
    """
    scalar = (str, int, float, bool)
    return {k: v if isinstance(v, scalar) or (isinstance(v, list) and v
                                              and all(isinstance(x, scalar) for x in v))
            else json.dumps(v) for k, v in attrs.items()}


def flatten(config: dict, prefix: str = "") -> dict:
    """A nested config as dotted keys; lists as JSON text.

    >>> flatten({"mode": "frozen", "learning": {"lr": 0.001}, "encoder": {"lags": [0, 1]}})
    {'mode': 'frozen', 'learning.lr': 0.001, 'encoder.lags': '[0, 1]'}
    """
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list) else value
    return out


def run_scores(r: np.ndarray, layers) -> dict[str, float]:
    """A run's score at each layer from its (n_layers, n_voxels) prequential r: the mean over
    voxels, those with no score (NaN) left out.

    >>> run_scores(np.array([[0.5, 0.25], [0.5, np.nan]]), ["cnn", "layer_1"])
    {'cnn': 0.375, 'layer_1': 0.5}
    """
    with warnings.catch_warnings():  # a layer whose voxels are all masked scores NaN, silently
        warnings.simplefilter("ignore", RuntimeWarning)
        return {layer: float(v) for layer, v in zip(layers, np.nanmean(r, axis=1))}


def run_table(results) -> pd.DataFrame:
    """One row per complete run (see the module's docstring)."""
    rows, layers, keys = [], [], []
    for group in _complete(results):
        attrs = dict(group.attrs)
        scores = run_scores(group["scores/r"][...], attrs["layers"])
        finite = {k: v for k, v in scores.items() if np.isfinite(v)}
        best = max(finite, key=finite.get) if finite else None  # the first of equals, as argmax
        config = flatten(attrs.get("config", {}))
        brain = _brain_columns(group, attrs)
        rows.append({**{k: attrs.get(k) for k in RUN_COLUMNS}, "best_layer": best, **brain,
                     "score": scores[best] if best else np.nan,
                     **{f"score.{k}": v for k, v in scores.items()},
                     "n_events": attrs.get("n_events"), "n_trials": _n_trials(group),
                     "masked_voxels": attrs.get("masked_voxels", 0),
                     "dropped_frames": attrs.get("dropped_frames", 0), **config})
        layers += [f"score.{k}" for k in scores if f"score.{k}" not in layers]
        layers += [k for k in brain if k not in layers]
        keys += [k for k in config if k not in keys and k not in RUN_COLUMNS]
    return pd.DataFrame(rows, columns=[*RUN_COLUMNS, "best_layer", "score", *layers, *COUNTS,
                                       *keys])


def _brain_columns(group, attrs: dict) -> dict:
    """A brain-aligned run's held-out R² per network (``heldout_r2.<network>``, mean over
    voxels, encoders.heldout) and the downstream probe's accuracy, where the run has them."""
    out = {}
    if "heldout" in group:
        h = {k: group[f"heldout/{k}"][...] for k in ("sse", "sum_y", "sum_y2", "count")}
        for i, name in enumerate(attrs.get("alignment", {}).get("networks", [])):
            out[f"heldout_r2.{name}"] = float(np.nanmean(pooled_r2(h["sse"][i], h["sum_y"],
                                                                   h["sum_y2"], h["count"])))
    if "probe_summary" in attrs:
        out["probe_accuracy"] = attrs["probe_summary"]["accuracy"]
        out["probe_layer"] = attrs["probe_summary"]["layer"]
    return out


def _n_trials(group) -> int:
    trials = group["trials"] if "trials" in group else None
    return int(trials["event"].shape[0]) if trials is not None and "event" in trials else 0


def trial_table(results) -> pd.DataFrame:
    """One row per complete run and trial (see the module's docstring)."""
    frames = []
    for group in _complete(results):
        attrs = dict(group.attrs)
        n = _n_trials(group)
        columns = {k: np.repeat(attrs[k], n) for k in ("run_id", "variant", "subject", "seed")}
        columns["trial"] = np.arange(n)
        arrays = {k: a for k, a in group["trials"].arrays() if k not in COORDS} \
            if "trials" in group else {}
        records = sorted(k for k, a in arrays.items() if a.ndim == 1 and k not in FIRST_FIELDS)
        for name in [*(k for k in FIRST_FIELDS if k in arrays), *records]:
            columns[name] = arrays[name][...]
        for name, attr in LAYERED.items():
            if name in arrays:
                values = arrays[name][...]
                columns.update({f"{name}.{layer}": values[:, k]
                                for k, layer in enumerate(attrs[attr])})
        frames.append(pd.DataFrame(columns))
    return pd.concat(frames, ignore_index=True)


def _complete(results) -> list:
    groups = run_groups(results)
    if not groups:
        raise ValueError(f"{results} holds no complete run yet (run 'cortexreplay run' first)")
    return groups


def default_out(results) -> Path:
    """Where ``export`` writes by default: ``<results stem>-export/`` next to the store."""
    results = Path(results)
    return results.with_name(f"{results.stem}-export")


def export(results, fmt: str = "csv", out=None, force: bool = False) -> list[tuple[Path, int]]:
    """Write ``runs.<fmt>`` and ``trials.<fmt>`` of a results store into ``out`` (default:
    ``default_out``); return each file written with its number of rows. Existing files are kept
    unless ``force``."""
    check_choice("format", fmt, FORMATS)
    if fmt == "parquet":
        try:
            importlib.import_module("pyarrow")  # pandas writes Parquet through it
        except ImportError:
            raise ValueError("--format parquet needs pyarrow: pip install pyarrow (or pip install "
                             "'cortexreplay[parquet]')") from None
    out = default_out(results) if out is None else Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    tables = {"runs": run_table(results), "trials": trial_table(results)}
    paths = {name: out / f"{name}.{fmt}" for name in tables}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not force:
        raise ValueError(f"export files already exist: {', '.join(existing)} (pass --force to "
                         "overwrite them)")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, table in tables.items():
        if fmt == "csv":
            table.to_csv(paths[name], index=False)
        else:
            table.to_parquet(paths[name], index=False)
        written.append((paths[name], len(table)))
    return written
