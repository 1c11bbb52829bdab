"""`cortexreplay summary`: scores per variant with intervals, and paired comparisons.

A variant's runs (learner seeds, subjects) are its replicates: its score is the mean over them of
the voxel-mean prequential r, at the variant's best layer. Intervals resample *sounds* (95%
bootstrap); a comparison between two variants uses the same resamples for both (paired) and a
sign-flip permutation test over sounds. Every number is computed on the trials scored in all runs
involved, so runs that replayed the same events in other orders are compared like for like.
"""
from __future__ import annotations

import numpy as np

from encoders.stats import bootstrap_ci, paired_bootstrap, paired_permutation_test, score

from .results import read_runs, results_attrs


def sound_stats(run: dict, events: np.ndarray, n_sounds: int) -> np.ndarray:
    """(n_layers, n_sounds, 6, n_voxels): the run's per-event stats on ``events``, summed per sound."""
    ev_stats = run["scores"]["event_stats"]
    stimulus_of = np.zeros(run["n_events"], dtype=np.int64)
    stimulus_of[run["trials"]["event"]] = run["trials"]["stimulus"]
    out = np.zeros((ev_stats.shape[0], n_sounds) + ev_stats.shape[2:])
    np.add.at(out, (slice(None), stimulus_of[events]), ev_stats[:, events])
    return out


def _replicates(runs: list[dict], events: np.ndarray, n_sounds: int) -> np.ndarray:
    """(n_layers, n_replicates, n_sounds, 6, n_voxels)."""
    n_vox = {r["scores"]["event_stats"].shape[-1] for r in runs}
    if len(n_vox) > 1:
        raise ValueError(f"runs of variant {runs[0]['variant']!r} have different voxel counts "
                         f"{sorted(n_vox)}; summarise one subject at a time")
    return np.stack([sound_stats(r, events, n_sounds) for r in runs], axis=1)


def _scored_events(runs: list[dict]) -> np.ndarray:
    """Events scored (n > 0) in every one of ``runs``."""
    scored = [r["scores"]["event_stats"][0, :, 0, 0] > 0 for r in runs]
    return np.flatnonzero(np.logical_and.reduce(scored))


def summarize(path, n_boot: int = 1000, n_perm: int = 1000, seed: int = 0) -> dict:
    """The summary of a results store as a JSON-ready dict (what ``summary --json`` prints)."""
    runs = read_runs(path)
    if not runs:
        raise ValueError(f"{path} holds no complete run yet (run 'cortexreplay run' first)")
    by_variant: dict[str, list[dict]] = {}
    for r in runs:
        by_variant.setdefault(r["variant"], []).append(r)
    n_sounds = 1 + max(int(r["trials"]["stimulus"].max()) for r in runs)
    rows, best = [], {}
    for name, group in by_variant.items():
        stats = _replicates(group, _scored_events(group), n_sounds)
        layers = group[0]["layers"]
        per_layer = {layer: score(stats[i]) for i, layer in enumerate(layers)}
        b = int(np.argmax(list(per_layer.values())))
        best[name] = b
        low, high = bootstrap_ci(stats[b], n_boot=n_boot, seed=seed)
        rows.append({"name": name, "mode": group[0]["mode"], "order": group[0]["order"],
                     "score": per_layer[layers[b]], "ci95": [low, high], "best_layer": layers[b],
                     "layers": per_layer, "n_runs": len(group),
                     "seeds": sorted({r["seed"] for r in group}),
                     "subjects": sorted({r["subject"] for r in group})})
    comparisons = []
    compare = results_attrs(path).get("scenario", {}).get("compare", [])
    for a, b in compare:
        if a not in by_variant or b not in by_variant:
            continue
        events = _scored_events(by_variant[a] + by_variant[b])
        sa = _replicates(by_variant[a], events, n_sounds)[best[a]]
        sb = _replicates(by_variant[b], events, n_sounds)[best[b]]
        sa, sb = _match_replicates(sa, sb, a, b)
        delta, (low, high) = paired_bootstrap(sa, sb, n_boot=n_boot, seed=seed)
        p = paired_permutation_test(sa, sb, n_perm=n_perm, seed=seed)
        comparisons.append({"a": a, "b": b, "delta": delta, "ci95": [low, high], "p": p,
                            "n_sounds": int((sa[0, :, 0, 0] > 0).sum())})
    return {"results": str(path), "runs": rows, "comparisons": comparisons}


def _match_replicates(sa: np.ndarray, sb: np.ndarray, a: str, b: str):
    """Pair replicates one to one; a single replicate (a frozen run) stands for every seed."""
    if sa.shape[0] == sb.shape[0]:
        return sa, sb
    if sb.shape[0] == 1:
        return sa, np.repeat(sb, sa.shape[0], axis=0)
    if sa.shape[0] == 1:
        return np.repeat(sa, sb.shape[0], axis=0), sb
    raise ValueError(f"cannot pair variants {a!r} ({sa.shape[0]} runs) and {b!r} "
                     f"({sb.shape[0]} runs): give them the same seeds and subjects")


def format_table(summary: dict) -> str:
    """The summary as an aligned text table."""
    lines = [f"{'run':<24}{'mode':<12}{'order':<10}{'score':>7}  {'95% CI':<18}{'best':<9}layers"]
    for r in summary["runs"]:
        layers = " ".join(f"{k}={v:.3f}" for k, v in r["layers"].items())
        ci = f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"
        lines.append(f"{r['name']:<24}{r['mode']:<12}{r['order']:<10}{r['score']:>7.3f}  {ci:<18}"
                     f"{r['best_layer']:<9}{layers}")
    if summary["comparisons"]:
        lines += ["", f"{'a':<24}{'b':<24}{'delta':>8}  {'95% CI (paired)':<20}{'p':>7}"]
        for c in summary["comparisons"]:
            ci = f"[{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}]"
            lines.append(f"{c['a']:<24}{c['b']:<24}{c['delta']:>+8.3f}  {ci:<20}{c['p']:>7.3f}")
    return "\n".join(lines)
