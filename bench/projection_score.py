"""What the encoder's random projection (``components``) costs in score, on features of base.

bench/realtime.py times a trial with and without the projection; this measures what the faster
encoder scores. A synthetic recording (``simulator.cortex.synthesize``, docs/synthetic.md) is read
from wav2vec 2.0 ``base``: a static cortex (plasticity 0) whose voxels are a rank-16 read-out of
the z-scored features of its read layer, through the hemodynamic kernel, at SNR 1 (noise ceiling
0.71). base is built at random init (``build_model("base", seed=0)``): nothing pretrained loads
here. The replay is a frozen run's: each trial's features of the read layer come from the same
network (the teacher itself, so the full model can reach the ceiling given data), and one
``PrequentialEncoder`` per setting (components 0 and each of ``COMPONENTS``) scores the same
trials in process with the scenario's lags, penalties and warm-up.

Reported per setting: the prequential score (mean over voxels of r over the scored trials), its
paired difference from components 0 with a 95% bootstrap interval over sounds
(``encoders.stats.paired_bootstrap``: each resample draws the same sounds for both), the voxels
it scores lower, and the encoder's median seconds per trial (one layer, 8 frames). 24 two-second
sounds x 2 presentations keep it to a few minutes: the full model's 4608-wide factorisations
take seconds a trial.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from encoders.encoding import PrequentialEncoder
from encoders.stats import paired_bootstrap
from simulator.cortex import CortexSettings, synthesize
from simulator.features import extract_features
from simulator.model import build_model
from simulator.scenario import DEFAULTS
from replay.store import open_recording
from replay.trials import replay_session

SIZE = "base"
COMPONENTS = (128, 256, 384, 512)
SETTINGS = CortexSettings(seed=0, sounds=24, duration_s=2.0, subjects=1, voxels=300, repeats=2,
                          plasticity=0.0, snr=1.0)
ENCODER = DEFAULTS["encoder"]
N_BOOT = 1000


def _by_sound(unit_stats: np.ndarray, stimulus: np.ndarray, n_sounds: int) -> np.ndarray:
    """Per-event score sums (n_events, 6, n_voxels) pooled per sound (n_sounds, 6, n_voxels)."""
    out = np.zeros((n_sounds, *unit_stats.shape[1:]))
    np.add.at(out, stimulus, unit_stats)
    return out


def run(log=print) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / SIZE
        build_model(SIZE, seed=0).save_pretrained(checkpoint)
        model = build_model(SIZE, seed=0).eval()
        log(f"projection_score: synthesising {SETTINGS.sounds} sounds x {SETTINGS.repeats} from "
            f"{SIZE} ({SETTINGS.read_layer})")
        t0 = time.perf_counter()
        store = synthesize(Path(tmp) / "rec.zarr", checkpoint, SETTINGS, log=None)
        synth_s = time.perf_counter() - t0
        recording = open_recording(store)
        events = recording.events("sub-01", "0")
        settings = (0, *COMPONENTS)
        encoders = {n: PrequentialEncoder([SETTINGS.read_layer], n_voxels=SETTINGS.voxels,
                                          n_units=len(events), lags=ENCODER["lags"],
                                          alphas=ENCODER["alphas"], warmup=ENCODER["warmup"],
                                          components=n) for n in settings}
        seconds, frames = {n: [] for n in settings}, []
        cache = {}  # a frozen network's features depend on the sound and its offset only
        trials = replay_session(recording, "sub-01", "0", sample_rate=16000,
                                tail_s=DEFAULTS["data"]["tail_s"])
        for trial in trials:
            key = (trial.stimulus, trial.offset_s)
            if key not in cache:
                cache[key] = extract_features(model, trial.waveform, trial.sample_rate,
                                              trial.frame_rate, trial.offset_s)[SETTINGS.read_layer]
            X = np.zeros((len(trial.frames), cache[key].shape[1]), np.float32)
            X[:min(len(X), len(cache[key]))] = cache[key][:len(X)]  # as trial_loop.align
            frames.append(len(X))
            for n, enc in encoders.items():
                t1 = time.perf_counter()
                enc.step(trial.index, trial.event, {SETTINGS.read_layer: X}, trial.frames)
                seconds[n].append(time.perf_counter() - t1)
            if (trial.index + 1) % 12 == 0:
                log(f"projection_score: trial {trial.index + 1}/{len(events)}")
    stats = {n: _by_sound(enc.unit_stats()[0], np.asarray(events.stimulus), SETTINGS.sounds)
             for n, enc in encoders.items()}
    r = {n: enc.r()[SETTINGS.read_layer] for n, enc in encoders.items()}
    out = {"size": SIZE, "read_layer": SETTINGS.read_layer, "sounds": SETTINGS.sounds,
           "duration_s": SETTINGS.duration_s, "repeats": SETTINGS.repeats,
           "voxels": SETTINGS.voxels, "snr": SETTINGS.snr, "rank": SETTINGS.rank,
           "noise_ceiling_r": float(np.sqrt(SETTINGS.snr / (1 + SETTINGS.snr))),
           "trials": len(events), "frames_per_trial": statistics.median(frames),
           "warmup": ENCODER["warmup"], "lags": list(ENCODER["lags"]),
           "alphas": list(ENCODER["alphas"]),
           "n_boot": N_BOOT, "synth_s": synth_s, "settings": {}}
    for n in settings:
        row = {"components": n, "score": float(np.mean(r[n])),
               "encoder_s": statistics.median(seconds[n][1:]),  # the first trial solves nothing
               "n_lagged": (min(n, X.shape[1]) if n else X.shape[1]) * len(ENCODER["lags"])}
        if n:
            delta, ci = paired_bootstrap(stats[n], stats[0], n_boot=N_BOOT, seed=0)
            row.update(delta=float(delta), delta_ci=[float(c) for c in ci],
                       voxels_lower=float(np.mean(r[n] < r[0])),
                       voxel_delta_median=float(np.median(r[n] - r[0])))
        out["settings"][str(n)] = row
        log(f"projection_score: components {n}: score {row['score']:.3f}, "
            f"encoder {row['encoder_s']:.2f} s a trial")
    return out
