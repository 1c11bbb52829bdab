"""`cortexreplay report`: one self-contained HTML page of a results store's figures and tables.

The page (``index.html``) embeds every figure as a base64 PNG, so the file works alone; each PNG
is also written beside it. Every number comes from ``simulator.summary`` (the tables are the
``summary`` command's) or from the per-trial records, through ``simulator.alignment`` for the gain
over the frozen run. Figures are drawn on ``matplotlib.figure.Figure`` objects with the Agg
renderer, so no pyplot state or backend switch is involved.
"""
from __future__ import annotations

import base64
import html
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from .alignment import trial_gain
from .export import flatten
from .results import read_subject_arrays, results_attrs
from .brain_summary import NETWORK_LABELS
from .summary import (LEARNING_MODES, MIN_CEILING, reading_once, summarize, variant_runs,
                      voxel_scores)

MARKER = '<meta name="generator" content="cortexreplay report">'  # what marks an earlier report
FIGSIZE, DPI = (7.0, 4.0), 110
WINDOW = 20          # trials in the rolling window of the prequential curves
Z95 = 1.96           # normal quantile of a two-sided 95% interval
# Config leaves that are replicates or bookkeeping, not settings a sweep varies.
IGNORED_KEYS = ("description", "seeds", "data.subjects", "data.store")
NO_LEARNING = ("frozen", "random")  # modes whose network never uses the learning.* settings
SCORE_LABEL = "prequential r (Pearson), voxel mean"
KEY_LABELS = {"learning.lr": "learning rate", "learning.steps_per_sound": "steps per sound",
              "learning.retention": "retention", "order": "order of the sounds",
              "mode": "training mode"}
CSS = """body{font-family:sans-serif;max-width:62em;margin:1em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em;display:block;overflow-x:auto}
th,td{border:1px solid #ccc;padding:.2em .5em;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}figure{margin:1em 0 2em}img{max-width:100%}
figcaption{font-size:.9em;color:#444;max-width:50em}.note{color:#775}code{font-size:.9em}"""


@dataclass
class Plot:
    """One figure of the page: its file stem, title, caption and PNG bytes."""

    name: str
    title: str
    caption: str
    png: bytes


def build_report(results, out, force: bool = False, n_boot: int = 1000, n_perm: int = 1000,
                 window: int = WINDOW) -> list[Plot]:
    """Write the report of the results store ``results`` into the folder ``out``
    (``index.html`` and one PNG per figure); return the figures.

    ``out`` may be missing, empty or an earlier report (whose PNGs are replaced); any other
    folder is refused unless ``force``. ``n_boot`` and ``n_perm`` are the summary's."""
    if not (isinstance(window, int) and window >= 2):
        raise ValueError(f"Invalid value for the 'window' parameter. Allowed values are integers "
                         f">= 2, but got {window!r} instead.")
    results, out = Path(results), Path(out)
    earlier = _check_out(out, results, force)
    with reading_once():  # every function below reads the store once between them
        summary = summarize(results, n_boot=n_boot, n_perm=n_perm)
        by_variant = variant_runs(results)
        attrs = results_attrs(results)
        sections = [
            ("Variants", [_variant_table(summary)]),
            ("Comparisons", [_comparison_table(summary)]),
            ("Prequential score over trials", [_prequential_plot(summary, by_variant, window)]),
            ("Score per layer", [_layer_plot(summary)]),
            ("Sweeps", _sweep_plots(summary, by_variant)),
            ("Weight change against the gain over the frozen run",
             _weight_plots(summary, by_variant, window) + [_alignment_table(summary)]),
            ("Voxels", _voxel_blocks(results, summary)),
            ("Brain-aligned fine-tuning: held-out R²", _heldout_table(summary)),
            ("Downstream probe", _probe_table(summary)),
        ]
    sections = [(title, blocks) for title, blocks in sections if blocks]
    plots = [b for _, blocks in sections for b in blocks if isinstance(b, Plot)]
    _unique_names(plots)
    out.mkdir(parents=True, exist_ok=True)
    if earlier:
        for old in out.glob("*.png"):  # an earlier report's figures, some perhaps gone now
            old.unlink()
    for plot in plots:
        (out / f"{plot.name}.png").write_bytes(plot.png)
    (out / "index.html").write_text(_page(results, attrs, summary, sections, n_boot, n_perm),
                                    encoding="utf-8")
    return plots


def _check_out(out: Path, results: Path, force: bool) -> bool:
    """Refuse an ``out`` the report must not write into; True if it holds an earlier report."""
    inside = (results / "zarr.json").exists() and (
        out.resolve() == results.resolve() or results.resolve() in out.resolve().parents)
    if (out / "zarr.json").exists() or inside:
        raise ValueError(f"--out {out} is (or lies inside) a Zarr store; choose another folder "
                         "for the report")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    if not out.exists() or not any(out.iterdir()):
        return False
    index = out / "index.html"
    earlier = index.is_file() and MARKER in index.read_text(encoding="utf-8", errors="replace")[:2000]
    if not earlier and not force:
        raise ValueError(f"--out {out} is not empty and holds no earlier report; choose another "
                         "folder or pass --force to write into it")
    return earlier


def _unique_names(plots: list[Plot]) -> None:
    """File stems safe for any file system, distinct even where variant names differ only in
    characters that were replaced."""
    seen: set[str] = set()
    for plot in plots:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", plot.name).strip("._") or "figure"
        name, k = stem, 2
        while name in seen:
            name, k = f"{stem}-{k}", k + 1
        seen.add(name)
        plot.name = name


# ---------------------------------------------------------------- tables

def _fmt(x, spec: str = ".3f") -> str:
    return "-" if x is None or (isinstance(x, float) and not np.isfinite(x)) else format(x, spec)


def _table(table_id: str, header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f'<table id="{table_id}"><tr>{head}</tr>{body}</table>'


def _variant_table(summary: dict) -> str:
    rows = [[r["name"], r["mode"], r["order"], _fmt(r["score"]),
             f"[{_fmt(r['ci95'][0])}, {_fmt(r['ci95'][1])}]", _fmt(r.get("score_normalised")),
             r["best_layer"], str(r["n_runs"]), ", ".join(r["subjects"])]
            for r in summary["runs"]]
    caption = ("Score: mean over voxels of the prequential Pearson r at the variant's best layer "
               "(mean over seeds, then subjects); 95% CI: bootstrap over sounds; /ceil: the mean r "
               f"of voxels whose noise ceiling is at least {MIN_CEILING} divided by their mean "
               "ceiling (- without ceilings).")
    return _table("variants", ["variant", "mode", "order", "score", "95% CI", "/ceil",
                               "best layer", "runs", "subjects"], rows) + _note(caption)


def _comparison_table(summary: dict) -> str:
    if not summary["comparisons"]:
        return _note("The scenario compares no variants (its 'compare' list is empty).")
    rows = [[c["a"], c["b"], _fmt(c["delta"], "+.3f"),
             f"[{_fmt(c['ci95'][0], '+.3f')}, {_fmt(c['ci95'][1], '+.3f')}]", _fmt(c["p"]),
             str(c["n_sounds"]), ", ".join(c["subjects"])] for c in summary["comparisons"]]
    caption = ("delta = score(a) − score(b), runs paired by subject and seed, on the trials "
               "scored in both; 95% CI: paired bootstrap over sounds; p: two-sided sign-flip "
               "permutation test over sounds.")
    return _table("comparisons", ["a", "b", "delta", "95% CI (paired)", "p", "sounds",
                                  "subjects"], rows) + _note(caption)


def _alignment_table(summary: dict) -> str:
    if not summary["alignment"]:
        return _note("No alignment: it needs a frozen variant in recorded order and a variant "
                     "that learns during the replay (continuous or reset) on the same events.")
    layers = list(dict.fromkeys(k for a in summary["alignment"] for k in a["layers"]))
    rows = []
    for a in summary["alignment"]:
        cells = [f"{_fmt(a['layers'][k]['r'], '+.2f')} (p={_fmt(a['layers'][k]['p'])})"
                 if k in a["layers"] else "" for k in layers]
        rows.append([f"{a['variant']}/{a['subject']}/seed-{a['seed']}", a["against"],
                     a["gain_layer"], *cells])
    caption = ("Per layer: Pearson r over scored trials between the layer's ||ΔW|| and the gain "
               "in trial score over the frozen run at the gain layer (the run's best layer), "
               "with a two-sided permutation p-value (simulator.alignment).")
    return _table("alignment", ["run", "against", "gain layer", *layers], rows) + _note(caption)


def _heldout_table(summary: dict) -> list[str]:
    """The summary's held-out R² rows (brain-aligned runs), or nothing."""
    if not summary.get("heldout"):
        return []
    rows = []
    for r in summary["heldout"]:
        first = r["networks"][0]
        for n in r["networks"]:
            delta = "" if n == first else (f"{_fmt(r['delta'][n], '+.3f')} "
                                           f"[{_fmt(r['delta_ci95'][n][0], '+.3f')}, "
                                           f"{_fmt(r['delta_ci95'][n][1], '+.3f')}]")
            rows.append([r["variant"], NETWORK_LABELS.get(n, n), _fmt(r["r2"][n]),
                         f"[{_fmt(r['ci95'][n][0])}, {_fmt(r['ci95'][n][1])}]", delta,
                         str(r["n_sounds"]), ", ".join(r["sessions"])])
    caption = ("R² of the head on the replayed session, which no head was trained on (mean over "
               "voxels, then runs), for the fine-tuned network and the same head on the frozen "
               "and on a random-init network; 95% CI: bootstrap over held-out sounds, paired "
               "for the differences (docs/scores.md).")
    return [_table("heldout", ["variant", "network", "R²", "95% CI", "brain-aligned − this",
                               "sounds", "trained on"], rows) + _note(caption)]


def _probe_table(summary: dict) -> list[str]:
    """The summary's downstream probe rows, or nothing."""
    if not summary.get("probe"):
        return []
    rows = [[p["variant"], p["mode"], _fmt(p["accuracy"]),
             f"[{_fmt(p['ci95'][0])}, {_fmt(p['ci95'][1])}]", f"{p['correct']}/{p['n_test']}",
             "/".join(p["layers"]), " ".join(f"{k}={_fmt(v)}" for k, v in p["by_layer"].items()),
             _fmt(p["chance"], ".2f")] for p in summary["probe"]]
    caption = ("Linear probe of the categories of held-out synthetic sounds from each run's "
               "network as the run left it; the layer chosen by cross-validation on the "
               "training sounds; 95% CI: Wilson, over the variant's pooled held-out sounds.")
    return [_table("probe", ["variant", "mode", "accuracy", "95% CI", "correct", "chosen layer",
                             "per layer", "chance"], rows) + _note(caption)]


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


# ---------------------------------------------------------------- figures

def _figure(n_rows: int = 1, n_cols: int = 1, size=FIGSIZE, **kw):
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    return fig, fig.subplots(n_rows, n_cols, squeeze=False, **kw)


def _plot(fig: Figure, name: str, title: str, caption: str) -> Plot:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return Plot(name, title, caption, buf.getvalue())


def _legend(fig: Figure, ax, **kw) -> None:
    """A legend outside the axes, where it cannot cover data: beside them, or below them when
    its labels are long (beside, they would squeeze the axes)."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    if max(map(len, labels)) > 28:
        fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=8, **kw)
    else:
        fig.legend(handles, labels, loc="outside right upper", fontsize=8, **kw)


def rolling_band(values: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Trailing-window mean, standard error and count over (n_runs, n_trials) values (NaN: no
    value), the window's trials of every run pooled.

    >>> m, se, n = rolling_band(np.array([[1.0, 2, 3, np.nan], [3, 4, 5, 6]]), 2)
    >>> m.tolist(), n.tolist()
    ([2.0, 2.5, 3.5, 4.666666666666667], [2, 4, 4, 3])
    """
    finite = np.isfinite(values)
    v = np.where(finite, values, 0.0)

    def window_sum(a):
        # Trial t's window is trials max(0, t - window + 1)..t: a difference of cumulative sums.
        c = np.concatenate([[0.0], np.cumsum(a.sum(axis=0))])
        return c[1:] - c[np.maximum(np.arange(1, len(c)) - window, 0)]

    n, s, ss = window_sum(finite), window_sum(v), window_sum(v * v)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s / n
        var = np.maximum(ss - n * mean ** 2, 0.0) / (n - 1)
        return mean, np.sqrt(var / n), n.astype(np.int64)


def _colours(summary: dict) -> dict[str, tuple]:
    """One colour per variant, the same in every figure."""
    cmap = matplotlib.colormaps["tab10"]
    return {r["name"]: cmap(k % 10) for k, r in enumerate(summary["runs"])}


def _runs_of(by_variant: dict, name: str) -> list[dict]:
    return [r for runs in by_variant[name].values() for r in runs]


def trial_scores(runs: list[dict], layer: str) -> np.ndarray:
    """(n_runs, n_trials) each run's trial score at ``layer`` by replay position; NaN in its
    warm-up (not scored) and past its last trial."""
    out = np.full((len(runs), max(len(r["trials"]["event"]) for r in runs)), np.nan)
    for k, run in enumerate(runs):
        warmup = int(run["config"]["encoder"]["warmup"])
        scores = run["trials"]["trial_r"][:, run["layers"].index(layer)]
        out[k, warmup:len(scores)] = scores[warmup:]
    return out


def _band(ax, values: np.ndarray, window: int, colour, label: str) -> int:
    """Draw the trailing-window mean and its 95% band of (n_runs, n_trials) values, from the
    first full window on; return the window used (shorter when fewer trials were scored)."""
    scored = np.flatnonzero(np.isfinite(values).any(axis=0))
    if len(scored) == 0:
        return 0
    window = min(window, len(scored))
    mean, se, n = rolling_band(values, window)
    x = np.arange(1, values.shape[1] + 1)  # trials numbered from 1 in the replay
    shown = (x - 1 >= scored[0] + window - 1) & (n >= 1)
    ax.plot(x[shown], mean[shown], color=colour, label=label)
    half = np.where(n >= 2, Z95 * se, np.nan)
    ax.fill_between(x[shown], (mean - half)[shown], (mean + half)[shown], color=colour,
                    alpha=0.2, linewidth=0)
    return window


def _prequential_plot(summary: dict, by_variant: dict, window: int) -> Plot:
    fig, ((ax,),) = _figure()
    colours, used = _colours(summary), []
    for row in summary["runs"]:
        values = trial_scores(_runs_of(by_variant, row["name"]), row["best_layer"])
        used.append(_band(ax, values, window, colours[row["name"]],
                          f"{row['name']} ({row['best_layer']})"))
    ax.axhline(0.0, color="0.6", linewidth=0.8)
    ax.set(xlabel="trial (position in the replay)", ylabel="trial r (Pearson, voxel mean)",
           title="Prequential score over trials (best layers)")
    _legend(fig, ax)
    shown = sorted(set(w for w in used if w))
    caption = (f"Line: mean trial score over a trailing window of {'/'.join(map(str, shown))} "
               "trials, pooled over the variant's runs (seeds, subjects). A trial's score is the "
               "Pearson r between its predicted and recorded frames, averaged over voxels, "
               "predicted before the encoder learned from the trial. Band: mean ± 1.96 SE, SE = "
               "SD of the window's trial scores (all runs) / √(their number), trials treated as "
               "independent. Warm-up trials are not scored and not drawn; the tables' score "
               "pools frames over all trials instead, so it differs from the mean trial score.")
    return _plot(fig, "prequential", "Prequential score over trials", caption)


def _layer_plot(summary: dict) -> Plot:
    layers = list(dict.fromkeys(k for r in summary["runs"] for k in r["layers"]))
    fig, ((ax,),) = _figure()
    colours = _colours(summary)
    for row in summary["runs"]:
        x = [layers.index(k) for k in row["layers"]]
        ax.plot(x, list(row["layers"].values()), marker="o", color=colours[row["name"]],
                label=row["name"])
        ax.plot(layers.index(row["best_layer"]), row["score"], marker="*", markersize=14,
                color=colours[row["name"]], linestyle="none")
    ax.set_xticks(range(len(layers)), layers, rotation=45 if len(layers) > 8 else 0)
    ax.set(xlabel="layer (input side to output side)", ylabel="score: " + SCORE_LABEL,
           title="Score per layer")
    _legend(fig, ax)
    caption = ("Each variant's score at every scored layer (the summary's per-layer scores: "
               "mean over voxels of the prequential Pearson r, mean over seeds then subjects). "
               "Star: the variant's best layer, whose score the tables report.")
    return _plot(fig, "layers", "Score per layer", caption)


# ---------------------------------------------------------------- sweeps

def variant_settings(by_variant: dict) -> dict[str, dict]:
    """Each variant's resolved config as ``{dotted key: value}`` (lists as JSON), without the
    replicate keys, and without ``learning.*`` where the mode never learns (its value there
    means nothing)."""
    out = {}
    for name in by_variant:
        cfg = _runs_of(by_variant, name)[0]["config"]
        # A list (lags, layers) is one categorical value; as JSON text it can be compared.
        leaves = {k: v for k, v in flatten(cfg).items() if k not in IGNORED_KEYS}
        if cfg["mode"] in NO_LEARNING:
            leaves = {k: v for k, v in leaves.items() if not k.startswith("learning.")}
        out[name] = leaves
    return out


def varying_keys(settings: dict[str, dict]) -> list[str]:
    """The keys with more than one value among the variants that have them.

    >>> varying_keys({"a": {"lr": 1e-3, "mode": "continuous"}, "b": {"lr": 1e-2, "mode":
    ...               "continuous"}, "c": {"mode": "frozen"}})
    ['lr', 'mode']
    """
    keys = sorted({k for leaves in settings.values() for k in leaves})
    return [k for k in keys if len({leaves[k] for leaves in settings.values() if k in leaves}) > 1]


def _text(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _sweep_plots(summary: dict, by_variant: dict) -> list[Plot]:
    """A figure per key that varies while the others stay: a key that changes only together
    with another (the frozen control's mode in a rate sweep) is no sweep of its own."""
    settings = variant_settings(by_variant)
    return [_sweep_plot(key, summary, settings) for key in varying_keys(settings)
            if any(len(m) > 1 for m in _sweep_lines(key, summary, settings)[1].values())]


def _sweep_lines(key: str, summary: dict, settings: dict[str, dict]):
    """The keys other than ``key`` that vary among the variants having ``key``, and those
    variants' summary rows grouped into one line per combination of them."""
    rows = [r for r in summary["runs"] if key in settings[r["name"]]]
    split = [k for k in varying_keys({r["name"]: settings[r["name"]] for r in rows}) if k != key]
    lines: dict[str, list[dict]] = {}
    for r in rows:
        label = ", ".join(f"{k.rsplit('.', 1)[-1]}={_text(settings[r['name']].get(k))}"
                          for k in split)
        lines.setdefault(label or "variants", []).append(r)
    return split, lines


def _sweep_plot(key: str, summary: dict, settings: dict[str, dict]) -> Plot:
    lacking = [r for r in summary["runs"] if key not in settings[r["name"]]]
    split, lines = _sweep_lines(key, summary, settings)
    values = [settings[r["name"]][key] for members in lines.values() for r in members]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    log = numeric and all(v > 0 for v in values) and (
        key == "learning.lr" or max(values) / min(values) > 100)
    categories = list(dict.fromkeys(_text(v) for v in values))
    fig, ((ax,),) = _figure()
    cmap = matplotlib.colormaps["tab10"]
    for k, (label, members) in enumerate(lines.items()):
        if numeric:
            members = sorted(members, key=lambda r: settings[r["name"]][key])
            x = np.array([settings[r["name"]][key] for r in members], dtype=float)
        else:  # categories side by side, each line shifted a little so error bars do not overlap
            shift = 0.6 / len(lines) * (k - (len(lines) - 1) / 2)
            x = np.array([categories.index(_text(settings[r["name"]][key])) for r in members]) + shift
        y = np.array([r["score"] for r in members])
        err = np.abs(np.array([[r["score"] - r["ci95"][0], r["ci95"][1] - r["score"]]
                               for r in members]).T)
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=cmap(k % 10),
                    linestyle="-" if numeric else "none", label=label if len(lines) > 1 else None)
    for k, r in enumerate(lacking):
        colour = cmap((len(lines) + k) % 10)
        ax.axhline(r["score"], color=colour, linestyle="--", label=f"{r['name']} ({r['mode']}: does not learn)")
        ax.axhspan(r["ci95"][0], r["ci95"][1], color=colour, alpha=0.12, linewidth=0)
    if log:
        ax.set_xscale("log")
    ax.margins(x=0.06)
    if not numeric:
        ax.set_xticks(range(len(categories)), categories)
        ax.set_xlim(-0.5, len(categories) - 0.5)
    name = KEY_LABELS.get(key, key)
    ax.set(xlabel=f"{name} ({key})" if name != key else key, ylabel="score: " + SCORE_LABEL,
           title=f"Score against {name}")
    _legend(fig, ax)
    caption = (f"Each variant's score (mean over voxels of the prequential Pearson r at its best "
               f"layer) against its value of {key}; error bars: the 95% bootstrap interval over "
               "sounds from the summary.")
    if split:
        caption += f" One {'line' if numeric else 'colour'} per value of {', '.join(split)}."
    if lacking:
        caption += (f" Dashed, with their 95% interval as a band: variants whose mode never "
                    f"learns, so {key} does not apply.")
    if log:
        caption += " Logarithmic x axis."
    return _plot(fig, f"sweep-{key}", f"Sweep: {name}", caption)


# ---------------------------------------------------------------- weight change

def _padded(arrays: list[np.ndarray]) -> np.ndarray:
    """Arrays of (n_trials_i, ...) stacked to (n, max n_trials, ...), NaN past each one's end."""
    out = np.full((len(arrays), max(len(a) for a in arrays)) + arrays[0].shape[1:], np.nan)
    for k, a in enumerate(arrays):
        out[k, :len(a)] = a
    return out


def _weight_plots(summary: dict, by_variant: dict, window: int) -> list[Plot]:
    plots = []
    for row in summary["runs"]:
        if row["mode"] not in LEARNING_MODES:
            continue
        runs = _runs_of(by_variant, row["name"])
        entries = [a for a in summary["alignment"] if a["variant"] == row["name"]]
        fig, axes = _figure(2 if entries else 1, 1, size=(7.0, 6.0 if entries else 4.0),
                            sharex=True)
        ax = axes[0][0]
        dw = np.nanmean(_padded([r["trials"]["delta_w"] for r in runs]), axis=0)
        x = np.arange(1, len(dw) + 1)
        layers = runs[0]["delta_w_layers"]
        cmap = matplotlib.colormaps["viridis"]
        for k, layer in enumerate(layers):
            # A trial without an update (a skipped step) has ||ΔW|| = 0: no point on a log axis.
            ax.plot(x, np.where(dw[:, k] > 0, dw[:, k], np.nan), linewidth=1,
                    color=cmap(k / max(len(layers) - 1, 1)), label=layer)
        ax.set_yscale("log")
        ax.set(ylabel="||ΔW|| (L2 norm)", title=f"{row['name']}: weight change per trial")
        _legend(fig, ax, title="layer", title_fontsize=8)
        caption = (f"Top: the L2 norm of each layer's weight change made by the trial's update, "
                   f"mean over the variant's {len(runs)} run(s), on a log scale.")
        if entries:
            gain_ax = axes[1][0]
            gains = []
            for a in entries:
                run = next(r for r in by_variant[a["variant"]][a["subject"]] if r["seed"] == a["seed"])
                frozen = by_variant[a["against"]][a["subject"]][0]  # as summary's alignment takes it
                positions, gain = trial_gain(run, frozen, a["gain_layer"],
                                             int(run["config"]["encoder"]["warmup"]))
                gain_ax.plot(positions + 1, gain, linestyle="none", marker=".", markersize=3,
                             color="0.55")
                full = np.full(len(run["trials"]["event"]), np.nan)
                full[positions] = gain
                gains.append(full)
            used = _band(gain_ax, _padded(gains), window, "C3", "trailing mean")
            gain_ax.axhline(0.0, color="0.3", linewidth=0.8)
            gain_ax.set(ylabel="gain over frozen (Δ trial r)",
                        title=f"gain in trial score over {entries[0]['against']} at "
                              f"{entries[0]['gain_layer']}")
            caption += (f" Bottom: per trial (dots), the run's trial score minus the frozen run "
                        f"{entries[0]['against']}'s on the same recorded event, at the run's best "
                        f"layer; line: trailing mean over {used} trials, band: mean ± 1.96 SE "
                        "(as in the prequential figure). The alignment table gives each layer's "
                        "correlation between the two.")
        else:
            caption += " No frozen run in recorded order to measure a gain against."
        axes[-1][0].set_xlabel("trial (position in the replay)")
        plots.append(_plot(fig, f"weights-{row['name']}", f"Weight change: {row['name']}",
                           caption))
    return plots


# ---------------------------------------------------------------- voxels

def _voxel_blocks(results: Path, summary: dict) -> list:
    ceilings = read_subject_arrays(results, "ceilings")
    coords = read_subject_arrays(results, "voxels")
    blocks, scores = [], {}
    for subject in sorted({s for r in summary["runs"] for s in r["subjects"]}):
        row = max((r for r in summary["runs"] if subject in r["subjects"]), key=lambda r: r["score"])
        if row["name"] not in scores:
            scores[row["name"]] = voxel_scores(results, row["name"])
        r = scores[row["name"]][subject]
        if subject in ceilings:
            blocks.append(_ceiling_plot(subject, ceilings[subject], r, row, summary))
        else:
            blocks.append(_note(f"{subject}: no noise ceiling in the store (it needs sounds "
                                "presented at least twice); no ceiling figure."))
        if subject in coords and coords[subject].shape == (len(r), 3):
            blocks.append(_map_plot(subject, coords[subject], r, row))
        else:
            blocks.append(_note(f"{subject}: no voxel coordinates in the store (results written "
                                "before they were kept); no voxel map."))
    return blocks


def _ceiling_plot(subject: str, ceiling: np.ndarray, r: np.ndarray, row: dict,
                  summary: dict) -> Plot:
    fig, ((ax,),) = _figure(size=(7.0, 4.5))
    low = ceiling < MIN_CEILING
    ax.scatter(ceiling[~low], r[~low], s=10, color="C0", label=f"ceiling ≥ {MIN_CEILING}")
    ax.scatter(ceiling[low], r[low], s=10, color="0.65", label=f"ceiling < {MIN_CEILING}")
    both = np.concatenate([ceiling[np.isfinite(ceiling)], r[np.isfinite(r)]])
    lo, hi = (float(both.min()), float(both.max())) if len(both) else (0.0, 1.0)
    ax.plot([lo, hi], [lo, hi], color="0.3", linestyle="--", linewidth=1, label="identity")
    ax.set(xlabel="noise ceiling (Pearson r)",
           ylabel=f"prequential r (Pearson), {row['name']} at {row['best_layer']}",
           title=f"{subject}: noise ceiling and score per voxel")
    _legend(fig, ax)
    formula = summary["ceiling"].get(subject, {}).get("formula", "")
    caption = (f"Each dot is a voxel of {subject}: its noise ceiling against the prequential "
               f"Pearson r of {row['name']} (the best variant) at its best layer "
               f"{row['best_layer']}, pooled over sounds, mean over seeds. Dashed: identity. "
               f"Grey: ceiling below {MIN_CEILING}, left out of the ceiling-normalised score. "
               f"Ceiling: {formula}")
    return _plot(fig, f"ceiling-{subject}", f"Noise ceiling: {subject}", caption)


def _map_plot(subject: str, xyz: np.ndarray, r: np.ndarray, row: dict) -> Plot:
    names = "xyz"
    a, b = sorted(np.argsort(np.ptp(xyz, axis=0), kind="stable")[-2:])
    c = 3 - a - b
    slices = np.unique(xyz[:, c])
    # A few distinct values on the third axis (slices, as in fUS): one panel each, so no voxel
    # hides another; otherwise one projection.
    panels = list(slices) if 2 <= len(slices) <= 4 else [None]
    # Panels as wide as the map's aspect needs (equal axes), so no figure is mostly margin.
    extent = np.ptp(xyz[:, [a, b]], axis=0) + 1.0
    width = float(np.clip(3.2 * extent[0] / extent[1], 1.5, 5.6 / len(panels)))
    height = float(np.clip(width * extent[1] / extent[0] + 1.2, 2.8, 4.0))
    fig, axes = _figure(1, len(panels), size=(max(width * len(panels) + 1.8, 4.5), height),
                        sharey=True)
    limit = float(np.nanmax(np.abs(r))) if np.isfinite(r).any() else 1.0
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.8")
    size = float(np.clip(3000 / max(len(r) / len(panels), 1), 2, 60))
    for ax, value in zip(axes[0], panels):
        keep = np.ones(len(r), bool) if value is None else xyz[:, c] == value
        image = ax.scatter(xyz[keep, a], xyz[keep, b], c=r[keep], cmap=cmap, vmin=-limit,
                           vmax=limit, s=size, marker="s", plotnonfinite=True)
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlabel(f"{names[a]} (recording units)")
        if value is not None:
            ax.set_title(f"{names[c]} = {value:g}", fontsize=9)
    axes[0][0].set_ylabel(f"{names[b]} (recording units)")
    fig.colorbar(image, ax=list(axes[0]), label=f"prequential r (Pearson) at {row['best_layer']}")
    fig.suptitle(f"{subject}: voxel map of {row['name']}'s score")
    caption = (f"Each square is a voxel of {subject} at its stored coordinates ({names[a]}, "
               f"{names[b]}), coloured by the prequential Pearson r of {row['name']} at "
               f"{row['best_layer']} (red positive, blue negative, grey: no score). "
               + (f"One panel per value of {names[c]}." if panels[0] is not None else
                  f"Projected along {names[c]}, the axis of least extent."))
    return _plot(fig, f"voxel-map-{subject}", f"Voxel map: {subject}", caption)


# ---------------------------------------------------------------- page

def _figure_html(plot: Plot) -> str:
    data = base64.b64encode(plot.png).decode("ascii")
    title = html.escape(plot.title)
    return (f'<figure id="{html.escape(plot.name)}"><h3>{title}</h3>'
            f'<img src="data:image/png;base64,{data}" alt="{title}">'
            f"<figcaption>{html.escape(plot.caption)}</figcaption></figure>")


def _page(results: Path, attrs: dict, summary: dict, sections, n_boot: int, n_perm: int) -> str:
    scenario = attrs.get("scenario") or {}
    variants = ", ".join(r["name"] for r in summary["runs"])
    intro = [
        f"<p>Results: <code>{html.escape(str(results))}</code></p>",
        f"<p>Scenario: {html.escape(scenario.get('description') or '(no description)')}</p>",
        f"<p>Variants: {html.escape(variants)}</p>",
        "<details><summary>Scenario table as read</summary><pre>"
        f"{html.escape(json.dumps(scenario, indent=2, sort_keys=True))}</pre></details>",
        f"<p>Score: {html.escape(attrs.get('score_formula', ''))}</p>",
        f"<p>Intervals: {n_boot} bootstrap resamples of the sounds; p-values: {n_perm} "
        "permutations.</p>",
    ]
    nav = "".join(f'<li><a href="#s{k}">{html.escape(t)}</a></li>'
                  for k, (t, _) in enumerate(sections))
    body = []
    for k, (title, blocks) in enumerate(sections):
        body.append(f'<h2 id="s{k}">{html.escape(title)}</h2>')
        body += [_figure_html(b) if isinstance(b, Plot) else b for b in blocks]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">{MARKER}'
            f"<title>cortexreplay report: {html.escape(results.name)}</title>"
            f"<style>{CSS}</style></head><body><h1>cortexreplay report</h1>"
            + "".join(intro) + f"<ul>{nav}</ul>" + "\n".join(body) + "</body></html>\n")
