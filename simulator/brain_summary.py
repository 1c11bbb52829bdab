"""The summary's brain-alignment part: the held-out R² of brain-aligned runs against the same head
on the frozen and on a random-init network, and the downstream probe's accuracies.

Held-out R² (encoders.heldout) is the mean over a variant's runs of the voxel-mean R² on the
replayed session, which no head was trained on; intervals resample the held-out sounds, the same
resamples for the three networks, so their differences are paired. Probe accuracies pool the
held-out probe sounds of a variant's runs, with a Wilson interval (simulator.probe).
"""
from __future__ import annotations

import numpy as np

from encoders.heldout import bootstrap_r2

from .probe import wilson_interval

NETWORK_LABELS = {"brain-aligned": "brain-aligned", "frozen": "frozen+head",
                  "random": "random+head"}
# Below this many held-out sounds, resampling them with replacement shrinks the pooled variance
# and biases resampled R² low: the percentile interval then says little.
MIN_HELDOUT_SOUNDS = 10


def _per_sound(values: np.ndarray, stimulus: np.ndarray, n_sounds: int) -> np.ndarray:
    """Rows of ``values`` (trial first, or network first then trial) summed per sound."""
    values = np.asarray(values, dtype=np.float64)
    trial_axis = values.ndim - 2
    out = np.zeros(values.shape[:trial_axis] + (n_sounds, values.shape[-1]))
    np.add.at(out, (slice(None),) * trial_axis + (stimulus,), values)
    return out


def heldout_rows(by_variant: dict, n_sounds: int, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """One row per variant whose runs kept held-out sums (the brain-aligned ones)."""
    rows = []
    for name, groups in by_variant.items():
        runs = [r for g in groups.values() for r in g if "heldout" in r]
        if not runs:
            continue
        per_run = [{k: _per_sound(r["heldout"][k], r["heldout"]["stimulus"], n_sounds)
                    for k in ("sse", "sum_y", "sum_y2", "count")} for r in runs]
        heard = np.flatnonzero(sum(p["count"].sum(axis=1) for p in per_run) > 0)
        parts = {k: [p[k][..., heard, :] for p in per_run] for k in ("sse", "sum_y", "sum_y2", "count")}
        out = bootstrap_r2(parts["sse"], parts["sum_y"], parts["sum_y2"], parts["count"],
                           n_boot=n_boot, seed=seed)
        networks = runs[0]["alignment"]["networks"]
        rows.append({"variant": name, "networks": networks, "n_runs": len(runs),
                     "n_sounds": int(len(heard)),
                     "r2": dict(zip(networks, out["r2"])), "ci95": dict(zip(networks, out["ci95"])),
                     "delta": dict(zip(networks[1:], out["delta"])),
                     "delta_ci95": dict(zip(networks[1:], out["delta_ci95"])),
                     "best_epochs": [r["alignment"]["history"][networks[0]]["best_epoch"]
                                     for r in runs],
                     "sessions": runs[0]["alignment"]["sessions"]})
    return rows


def probe_rows(by_variant: dict) -> list[dict]:
    """One row per variant whose runs ran the downstream probe."""
    rows = []
    for name, groups in by_variant.items():
        runs = [r for g in groups.values() for r in g if "probe" in r and "correct" in r["probe"]]
        if not runs:
            continue
        k = sum(int(r["probe"]["correct"][r["probe_summary"]["layers"].index(
            r["probe_summary"]["layer"])].sum()) for r in runs)
        n = sum(int(r["probe_summary"]["n_test"]) for r in runs)
        # Every layer's held-out accuracy too: the chosen one may be a layer that did not learn.
        names = runs[0]["probe_summary"]["layers"]
        by_layer = {name: float(np.mean(np.concatenate([r["probe"]["correct"][i] for r in runs])))
                    for i, name in enumerate(names)}
        layers = sorted({r["probe_summary"]["layer"] for r in runs})
        rows.append({"variant": name, "mode": runs[0]["mode"], "accuracy": k / n,
                     "ci95": list(wilson_interval(k, n)), "correct": k, "n_test": n,
                     "layers": layers, "by_layer": by_layer, "n_runs": len(runs),
                     "chance": 1.0 / len(runs[0]["probe_summary"]["categories"])})
    return rows


def format_lines(summary: dict) -> list[str]:
    """The held-out R² and probe tables as text lines (empty when there are none)."""
    lines = []
    if summary.get("heldout"):
        w = max([16] + [len(r["variant"]) + 2 for r in summary["heldout"]])
        lines += ["", "held-out R² of the brain-aligned head on the replayed session (mean over "
                      "voxels; 95% CI over sounds):"]
        for r in summary["heldout"]:
            first, others = r["networks"][0], r["networks"][1:]
            cells = "  ".join(f"{NETWORK_LABELS.get(n, n)} {r['r2'][n]:.3f} "
                              f"[{r['ci95'][n][0]:.3f}, {r['ci95'][n][1]:.3f}]"
                              for n in r["networks"])
            lines.append(f"  {r['variant']:<{w}}{cells}")
            deltas = "  ".join(f"{NETWORK_LABELS.get(first, first)} − {NETWORK_LABELS.get(n, n)} "
                               f"{r['delta'][n]:+.3f} [{r['delta_ci95'][n][0]:+.3f}, "
                               f"{r['delta_ci95'][n][1]:+.3f}]" for n in others)
            lines.append(f"  {'':<{w}}{deltas}  ({r['n_sounds']} sounds, {r['n_runs']} run(s), "
                         f"trained on sessions {', '.join(r['sessions'])}; best epochs "
                         f"{r['best_epochs']})")
            if r["n_sounds"] < MIN_HELDOUT_SOUNDS:
                lines.append(f"  {'':<{w}}(fewer than {MIN_HELDOUT_SOUNDS} held-out sounds: the "
                             "intervals are not reliable; hold out a longer session)")
    if summary.get("probe"):
        w = max([16] + [len(r["variant"]) + 2 for r in summary["probe"]])
        lines += ["", "downstream linear probe of sound categories on held-out sounds "
                      "(accuracy, Wilson 95% CI):"]
        for r in summary["probe"]:
            per_layer = " ".join(f"{k}={v:.2f}" for k, v in r["by_layer"].items())
            lines.append(f"  {r['variant']:<{w}}{r['accuracy']:.3f} [{r['ci95'][0]:.3f}, "
                         f"{r['ci95'][1]:.3f}]  {r['correct']}/{r['n_test']} at "
                         f"{'/'.join(r['layers'])} (chance {r['chance']:.2f}; per layer "
                         f"{per_layer})")
    return lines
