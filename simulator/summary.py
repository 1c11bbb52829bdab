"""`cortexreplay summary`: scores per variant with intervals, and paired comparisons.

A variant's runs are its replicates: learner seeds within a subject, and subjects. Its score is
the mean over subjects of the mean over seeds of the voxel-mean prequential r, at the variant's
best layer. Intervals resample *sounds* (95% bootstrap), the same sounds for every subject and
seed. A comparison pairs runs by subject and seed (a frozen run in recorded order, which does not
depend on the seed, stands for every seed of its subject), uses the same resamples for both
variants, and adds a sign-flip permutation test over sounds. Every number is computed on the
trials scored in all runs involved, so runs that replayed the same events in other orders are
compared like for like.
"""
from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager

import numpy as np

from encoders.ceiling import CEILING_FORMULA
from encoders.scores import pearson_from_stats
from encoders.stats import (bootstrap_ci, fdr_bh, paired_bootstrap, paired_permutation_test, score,
                            voxel_p_values)
from replay.trials import MAX_NONFINITE_FRACTION

from .alignment import drift_alignment, weight_gain_alignment
from .brain_summary import format_lines, heldout_rows, probe_rows
from .results import read_runs, read_subject_arrays, results_attrs

MIN_CEILING = 0.1  # voxels below this ceiling are left out of normalised scores
LEARNING_MODES = ("continuous", "reset", "brain-continuous")  # weights change during the replay


def sound_stats(run: dict, events: np.ndarray, n_sounds: int) -> np.ndarray:
    """(n_layers, n_sounds, 6, n_voxels): the run's per-event stats on ``events``, summed per sound."""
    ev_stats = run["scores"]["event_stats"]
    stimulus_of = np.zeros(run["n_events"], dtype=np.int64)
    stimulus_of[run["trials"]["event"]] = run["trials"]["stimulus"]
    out = np.zeros((ev_stats.shape[0], n_sounds) + ev_stats.shape[2:])
    np.add.at(out, (slice(None), stimulus_of[events]), ev_stats[:, events])
    return out


def _scored_events(runs: list[dict]) -> np.ndarray:
    """Events scored (n > 0) in every one of ``runs`` (all of one subject)."""
    scored = [r["scores"]["event_stats"][0, :, 0, 0] > 0 for r in runs]
    return np.flatnonzero(np.logical_and.reduce(scored))


def _by_subject(runs: list[dict]) -> dict[str, list[dict]]:
    """Runs grouped by subject, each group sorted by seed."""
    out: dict[str, list[dict]] = {}
    for r in sorted(runs, key=lambda r: (r["subject"], r["seed"])):
        out.setdefault(r["subject"], []).append(r)
    return out


def _group_stats(groups: dict[str, list[dict]], n_sounds: int, events: dict) -> list[np.ndarray]:
    """One (n_layers, n_seeds, n_sounds, 6, n_voxels) array per subject."""
    return [np.stack([sound_stats(r, events[s], n_sounds) for r in runs], axis=1)
            for s, runs in groups.items()]


def _at(stats: list[np.ndarray], layer: int) -> list[np.ndarray]:
    return [g[layer] for g in stats]


# Stores already read inside ``reading_once()``, most recent last (None: read every time).
_loaded: OrderedDict | None = None
_LOADED_MAX = 8


@contextmanager
def reading_once():
    """Within the block, each results store is read once (up to the last 8 used): for analyses
    that ask many questions of stores that no run is writing to meanwhile."""
    global _loaded
    outer, _loaded = _loaded, OrderedDict()
    try:
        yield
    finally:
        _loaded = outer


def _load(path) -> tuple[list[dict], dict[str, dict[str, list[dict]]], int]:
    """A results store's runs, the same grouped by variant then subject, and the sound count."""
    key = str(path)
    if _loaded is not None and key in _loaded:
        _loaded.move_to_end(key)
        return _loaded[key]
    loaded = _read(path)
    if _loaded is not None:
        _loaded[key] = loaded
        if len(_loaded) > _LOADED_MAX:
            _loaded.popitem(last=False)
    return loaded


def _read(path) -> tuple[list[dict], dict[str, dict[str, list[dict]]], int]:
    runs = read_runs(path)
    if not runs:
        raise ValueError(f"{path} holds no complete run yet (run 'cortexreplay run' first)")
    by_variant: dict[str, dict[str, list[dict]]] = {}
    for r in runs:
        by_variant.setdefault(r["variant"], []).append(r)
    by_variant = {name: _by_subject(group) for name, group in by_variant.items()}
    n_sounds = 1 + max(int(r["trials"]["stimulus"].max()) for r in runs)
    return runs, by_variant, n_sounds


def _variant_stats(groups: dict[str, list[dict]], n_sounds: int) -> list[np.ndarray]:
    """A variant's per-subject stats (n_layers, n_seeds, n_sounds, 6, n_voxels) on the events
    scored in all its runs of that subject."""
    return _group_stats(groups, n_sounds, {s: _scored_events(g) for s, g in groups.items()})


def _layer_scores(groups: dict[str, list[dict]], stats: list[np.ndarray]) -> dict[str, float]:
    layers = next(iter(groups.values()))[0]["layers"]
    return {layer: score(_at(stats, i)) for i, layer in enumerate(layers)}


def _variant_profile(path, variant: str) -> tuple[list[np.ndarray], dict[str, float]]:
    """A variant's per-subject stats at every layer, and its score at every layer."""
    _, by_variant, n_sounds = _load(path)
    if variant not in by_variant:
        raise ValueError(f"{path} has no run of variant {variant!r} (it has {', '.join(by_variant)})")
    groups = by_variant[variant]
    stats = _variant_stats(groups, n_sounds)
    return stats, _layer_scores(groups, stats)


def layer_scores(path, variant: str) -> dict[str, float]:
    """A variant's score at every layer (its layer profile), as in the summary's table."""
    return _variant_profile(path, variant)[1]


def best_layer_stats(path, variant: str, layer: str | None = None) -> list[np.ndarray]:
    """A variant's per-subject (n_seeds, n_sounds, 6, n_voxels) stats at its best layer (or at
    ``layer``)."""
    stats, profile = _variant_profile(path, variant)
    index = int(np.argmax(list(profile.values()))) if layer is None else list(profile).index(layer)
    return _at(stats, index)


def variant_runs(path) -> dict[str, dict[str, list[dict]]]:
    """A results store's complete runs by variant, then subject (each list sorted by seed)."""
    return _load(path)[1]


def voxel_r(stats: np.ndarray) -> np.ndarray:
    """(n_voxels,) prequential r per voxel of one subject's (n_seeds, n_sounds, 6, n_voxels)
    stats: pooled over sounds, then the mean over seeds."""
    return pearson_from_stats(stats.sum(axis=1)).mean(axis=0)


def voxel_scores(path, variant: str) -> dict[str, np.ndarray]:
    """A variant's r per voxel at its best layer, per subject (``voxel_r``)."""
    subjects = variant_runs(path)[variant]  # best_layer_stats keeps this order of subjects
    return {s: voxel_r(g) for s, g in zip(subjects, best_layer_stats(path, variant))}


def paired_stats(path, a: str, b: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Variants ``a`` and ``b`` of a results store paired as ``summary`` pairs them, each at its
    best layer: two lists (one entry per subject) of (n_seeds, n_sounds, 6, n_voxels) stats, for
    the functions of ``encoders.stats`` (to pool comparisons over several stores, say)."""
    _, by_variant, n_sounds = _load(path)
    best = {v: int(np.argmax(list(layer_scores(path, v).values()))) for v in (a, b)}
    sa, sb, _ = _paired(a, b, by_variant[a], by_variant[b], best, n_sounds)
    return sa, sb


def summarize(path, n_boot: int = 1000, n_perm: int = 1000, seed: int = 0) -> dict:
    """The summary of a results store as a JSON-ready dict (what ``summary --json`` prints)."""
    runs, by_variant, n_sounds = _load(path)
    ceilings = read_subject_arrays(path, "ceilings")
    brain_drift = read_subject_arrays(path, "brain_drift")
    rows, best = [], {}
    for name, groups in by_variant.items():
        stats = _variant_stats(groups, n_sounds)
        first = next(iter(groups.values()))[0]
        layers = first["layers"]
        per_layer = _layer_scores(groups, stats)
        best[name] = int(np.argmax(list(per_layer.values())))
        low, high = bootstrap_ci(_at(stats, best[name]), n_boot=n_boot, seed=seed)
        normalised = _normalised(dict(zip(groups, _at(stats, best[name]))), ceilings)
        # Voxels whose prequential r is above 0, Benjamini-Hochberg at q < 0.05, per subject.
        significant = {s: [int(fdr_bh(voxel_p_values(g, n_boot=n_boot, seed=seed))[0].sum()),
                           int(g.shape[-1])]
                       for s, g in zip(groups, _at(stats, best[name]))}
        rows.append({"name": name, "mode": first["mode"], "order": first["order"],
                     "score": per_layer[layers[best[name]]], "ci95": [low, high],
                     "score_normalised": normalised, "voxels_fdr05": significant,
                     "best_layer": layers[best[name]], "layers": per_layer,
                     **_encoder_profile(groups, best[name]),
                     "n_runs": sum(len(g) for g in groups.values()),
                     "skipped_steps": int(sum(r["trials"].get("skipped_steps", np.zeros(0)).sum()
                                              for g in groups.values() for r in g)),
                     # The non-finite frame policy's counts (docs/protocol.md), over the runs.
                     "masked_voxels": int(sum(r.get("masked_voxels", 0)
                                              for g in groups.values() for r in g)),
                     "dropped_frames": int(sum(r.get("dropped_frames", 0)
                                               for g in groups.values() for r in g)),
                     "seeds": sorted({r["seed"] for g in groups.values() for r in g}),
                     "subjects": sorted(groups)})
    comparisons = []
    attrs = results_attrs(path)  # stores made before "compare" was kept hold names only
    compare = attrs.get("compare", attrs.get("scenario", {}).get("compare", []))
    for a, b in compare:
        if a in by_variant and b in by_variant:
            comparisons.append(_compare(a, b, by_variant[a], by_variant[b], best, n_sounds,
                                        n_boot, n_perm, seed))
    return {"results": str(path), "runs": rows, "comparisons": comparisons,
            "alignment": _alignment(by_variant, rows, n_perm, seed),
            "drift": [{"variant": r["variant"], "subject": r["subject"], "seed": r["seed"],
                       "layers": drift_alignment(r, brain_drift[r["subject"]], n_perm, seed)}
                      for r in runs if r["subject"] in brain_drift and r["mode"] in LEARNING_MODES
                      and all(f"pooled/{layer}" in r["trials"] for layer in r["layers"])],
            "heldout": heldout_rows(by_variant, n_sounds, n_boot, seed),
            "probe": probe_rows(by_variant),
            "ceiling": {s: {"mean": float(np.nanmean(c)), "formula": CEILING_FORMULA,
                            "n_below_min": int((c < MIN_CEILING).sum())}
                        for s, c in ceilings.items()},
            "voxel_p_floor": 1.0 / (n_boot + 1)}


def _encoder_profile(groups: dict[str, list[dict]], layer: int) -> dict:
    """At the best layer: the voxels' median ridge penalty, and how many voxels of how many saw
    their alignment change (a drift detection), over all runs; empty for runs made before the
    encoder stored them."""
    runs = [r for g in groups.values() for r in g if "alpha" in r["scores"]]
    if not runs:
        return {}
    alphas = np.concatenate([r["scores"]["alpha"][layer] for r in runs])
    drift = [r["scores"]["drift"] for r in runs]
    changed = sum(len(np.unique(d[d[:, 0] == layer, 2])) for d in drift)
    return {"alpha_median": float(np.nanmedian(alphas)),
            "drift_voxels": [int(changed), int(sum(r["scores"]["alpha"].shape[1] for r in runs))]}


def _alignment(by_variant: dict, rows: list[dict], n_perm: int, seed: int) -> list[dict]:
    """‖ΔW‖ against the gain over the frozen run, for every run that learns (simulator.alignment)."""
    frozen = next((name for name, groups in by_variant.items()
                   if all(_seed_free(r) for g in groups.values() for r in g)), None)
    if frozen is None:
        return []
    best = {row["name"]: row["best_layer"] for row in rows}
    out = []
    for name, groups in by_variant.items():
        for subject, runs in groups.items():
            if subject not in by_variant[frozen]:
                continue
            reference = by_variant[frozen][subject][0]
            for run in runs:
                if run["mode"] not in LEARNING_MODES or not _comparable(run, reference, best[name]):
                    continue
                per_layer = weight_gain_alignment(run, reference, best[name], n_perm=n_perm,
                                                  seed=seed)
                out.append({"variant": name, "subject": subject, "seed": run["seed"],
                            "against": frozen, "gain_layer": best[name], "layers": per_layer})
    return out


def _comparable(run: dict, reference: dict, layer: str) -> bool:
    """Whether trials of ``run`` can be matched with the frozen ``reference`` by event."""
    same = ("session", "tail_s")
    return (layer in reference["layers"] and run["n_events"] == reference["n_events"]
            and all(run["config"]["data"][k] == reference["config"]["data"][k] for k in same))


def _normalised(stats_by_subject: dict[str, np.ndarray], ceilings: dict) -> float | None:
    """Ceiling-normalised score: per subject, the mean r over voxels whose ceiling is at least
    0.1 (mean over seeds) divided by the mean ceiling of those voxels; then the mean over
    subjects. A ratio of means, so a few voxels with tiny ceilings cannot dominate. None without
    ceilings."""
    per_subject = []
    for subject, stats in stats_by_subject.items():
        if subject not in ceilings:
            continue
        kept = ceilings[subject] >= MIN_CEILING
        if not kept.any():
            continue
        r = voxel_r(stats)
        per_subject.append(float(r[kept].mean() / ceilings[subject][kept].mean()))
    return float(np.mean(per_subject)) if per_subject else None


def _paired(a, b, groups_a, groups_b, best, n_sounds):
    """Per-subject stats of ``a`` and ``b`` at their best layers, runs paired by seed, on the
    events scored in every run involved; and the subjects."""
    subjects = sorted(set(groups_a) & set(groups_b))
    if not subjects:
        raise ValueError(f"variants {a!r} and {b!r} share no subject; they cannot be paired")
    pa, pb = {}, {}
    for s in subjects:
        pa[s], pb[s] = _pair_seeds(groups_a[s], groups_b[s], a, b, s)
    events = {s: _scored_events(pa[s] + pb[s]) for s in subjects}
    sa = _at(_group_stats(pa, n_sounds, events), best[a])
    sb = _at(_group_stats(pb, n_sounds, events), best[b])
    return sa, sb, subjects


def _compare(a, b, groups_a, groups_b, best, n_sounds, n_boot, n_perm, seed) -> dict:
    sa, sb, subjects = _paired(a, b, groups_a, groups_b, best, n_sounds)
    return {"a": a, "b": b, **paired_comparison(sa, sb, n_boot, n_perm, seed), "subjects": subjects}


def paired_comparison(stats_a, stats_b, n_boot: int = 1000, n_perm: int = 1000,
                      seed: int = 0) -> dict:
    """``score(a) − score(b)`` of paired per-sound stats (as ``paired_stats`` gives them): the
    difference, its paired bootstrap interval, the sign-flip p-value and the sounds scored."""
    delta, (low, high) = paired_bootstrap(stats_a, stats_b, n_boot=n_boot, seed=seed)
    p = paired_permutation_test(stats_a, stats_b, n_perm=n_perm, seed=seed)
    scored = np.logical_or.reduce([g[0, :, 0, 0] > 0 for g in stats_a])
    return {"delta": delta, "ci95": [low, high], "p": p, "n_sounds": int(scored.sum())}


def _pair_seeds(runs_a: list[dict], runs_b: list[dict], a: str, b: str, subject: str):
    """Runs of one subject paired seed by seed; a single seed-free run stands for every seed."""
    if len(runs_b) == 1 and len(runs_a) > 1 and _seed_free(runs_b[0]):
        return runs_a, runs_b * len(runs_a)
    if len(runs_a) == 1 and len(runs_b) > 1 and _seed_free(runs_a[0]):
        return runs_a * len(runs_b), runs_b
    seeds_a, seeds_b = [r["seed"] for r in runs_a], [r["seed"] for r in runs_b]
    if seeds_a != seeds_b:
        raise ValueError(f"cannot pair variants {a!r} (seeds {seeds_a}) and {b!r} (seeds "
                         f"{seeds_b}) on subject {subject!r}: give them the same seeds")
    return runs_a, runs_b


def _seed_free(run: dict) -> bool:
    """A frozen run in recorded order: nothing in it depends on the seed."""
    return run["mode"] == "frozen" and run["order"] == "recorded"


def format_table(summary: dict) -> str:
    """The summary as an aligned text table."""
    # Grid variants have long names (continuous,lr=1e-05,...): the name columns fit the longest.
    w = max([24] + [len(r["name"]) + 2 for r in summary["runs"]])
    m = max([12] + [len(r["mode"]) + 2 for r in summary["runs"]])  # brain-continuous is long
    lines = [f"{'run':<{w}}{'mode':<{m}}{'order':<10}{'score':>7}  {'95% CI':<18}{'/ceil':>6}  "
             f"{'best':<9}layers"]
    for r in summary["runs"]:
        layers = " ".join(f"{k}={v:.3f}" for k, v in r["layers"].items())
        ci = f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"
        norm = "-" if r.get("score_normalised") is None else f"{r['score_normalised']:.3f}"
        lines.append(f"{r['name']:<{w}}{r['mode']:<{m}}{r['order']:<10}{r['score']:>7.3f}  {ci:<18}"
                     f"{norm:>6}  {r['best_layer']:<9}{layers}")
    if summary["comparisons"]:
        lines += ["", f"{'a':<{w}}{'b':<{w}}{'delta':>8}  {'95% CI (paired)':<20}{'p':>7}"]
        for c in summary["comparisons"]:
            ci = f"[{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}]"
            lines.append(f"{c['a']:<{w}}{c['b']:<{w}}{c['delta']:>+8.3f}  {ci:<20}{c['p']:>7.3f}")
    lines.append("")
    for r in summary["runs"]:
        counts = ", ".join(f"{s} {k}/{n}" for s, (k, n) in r.get("voxels_fdr05", {}).items())
        lines.append(f"{r['name']}: voxels with r > 0 at FDR q < 0.05 (best layer): {counts}")
    for r in summary["runs"]:
        if "alpha_median" in r:
            changed, total = r["drift_voxels"]
            lines.append(f"{r['name']}: encoder at {r['best_layer']}: median ridge penalty "
                         f"{r['alpha_median']:g}; alignment changed (drift) in {changed}/{total} "
                         "voxels")
    for r in summary["runs"]:
        if r.get("masked_voxels") or r.get("dropped_frames"):
            lines.append(f"{r['name']}: {r['masked_voxels']} voxel(s) masked (non-finite in more "
                         f"than {MAX_NONFINITE_FRACTION:.0%} of their frames; no score) and "
                         f"{r['dropped_frames']} frame(s) left out for a NaN or inf")
    for r in summary["runs"]:
        if r.get("skipped_steps"):
            lines.append(f"{r['name']}: {r['skipped_steps']} self-supervised steps skipped because "
                         "their loss or gradient was not finite (learning rate too high?)")
    if summary["runs"] and "voxel_p_floor" in summary:
        lines.append(f"(bootstrap p-values cannot go below {summary['voxel_p_floor']:.1e}: raise "
                     "--n-boot for maps of many voxels)")
    for subject, c in summary.get("ceiling", {}).items():
        lines.append(f"noise ceiling of {subject}: mean {c['mean']:.3f} over voxels "
                     f"({c['n_below_min']} below {MIN_CEILING}; /ceil: mean r "
                     "over the others divided by their mean ceiling)")
    if summary.get("alignment"):
        lines += ["", "weight change against the gain over the frozen run, per trial "
                      "(Pearson r over scored trials, permutation p):"]
        for a in summary["alignment"]:
            cells = " ".join(f"{k}={v['r']:+.2f}(p={v['p']:.3f})" for k, v in a["layers"].items())
            lines.append(f"  {a['variant']}/{a['subject']}/seed-{a['seed']} vs {a['against']} "
                         f"at {a['gain_layer']}: {cells}")
    if summary.get("drift"):
        lines += ["", "representational drift between repeats, network against brain "
                      "(Pearson r across sounds, permutation p):"]
        for d in summary["drift"]:
            cells = " ".join(f"{k}={v['r']:+.2f}(p={v['p']:.3f})" for k, v in d["layers"].items())
            lines.append(f"  {d['variant']}/{d['subject']}/seed-{d['seed']}: {cells}")
    lines += format_lines(summary)
    return "\n".join(lines)
