"""A continuous-update trial of the learner against a bare transformers step on the same sound.

Baseline: what a user of transformers alone writes for one trial: a no-grad forward with hidden
states, then ``steps`` forward/backward/AdamW steps with precomputed masks and negatives.
Ours: ``Learner.features`` (pooled to frames) + ``Learner.learn`` (own random streams, per-layer
||dW||, retention). Target: overhead at most 10%.
"""
import numpy as np
import torch

from simulator.learner import Learner
from simulator.model import build_model

from .timing import bare_step, best_time

STEPS, SECONDS, SR = 3, 2.0, 16000


def run() -> dict:
    torch.set_num_threads(1)
    wave = np.random.default_rng(0).standard_normal(int(SECONDS * SR)).astype(np.float32)
    learner = Learner(build_model("tiny"), "continuous", lr=1e-4, steps_per_sound=STEPS,
                      retention=0.9, seed=0)

    def ours():
        learner.features(wave, SR, 1.0)
        learner.learn(wave)

    step, nograd = bare_step(build_model("tiny"), wave)

    def bare():
        nograd()
        for _ in range(STEPS):
            step()

    t_bare, t_ours = best_time(bare), best_time(ours)
    return {"bench": "learner_step", "model": "tiny", "sound_s": SECONDS, "steps": STEPS,
            "bare_s": t_bare, "ours_s": t_ours, "overhead": t_ours / t_bare - 1.0}


def markdown(r: dict) -> str:
    return (f"## Learner trial vs bare transformers step\n\n"
            f"wav2vec 2.0 `{r['model']}`, {r['sound_s']} s sound, {r['steps']} steps, one thread "
            f"({r['machine']['processor']}, Python {r['machine']['python']}).\n\n"
            f"| bare transformers | cortexreplay Learner | overhead |\n|---|---|---|\n"
            f"| {r['bare_s'] * 1e3:.0f} ms | {r['ours_s'] * 1e3:.0f} ms | {r['overhead']:+.1%} |\n\n"
            "Target: at most +10%. The overhead is the per-layer ||dW|| snapshot, the "
            "relaxation toward the starting weights, gradient clipping and random-stream swaps.\n")
