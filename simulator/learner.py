"""The learner: a wav2vec 2.0 that sees each sound, gives its features, then (maybe) learns from it."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from replay.checks import check_choice

from .features import extract_features
from .model import layer_modules
from .ssl import RandomStreams, ssl_step

MODES = ("frozen", "continuous", "reset")


def _numpy(value):
    """A CPU numpy copy of a tensor (AdamW's step counter included); other values as they are."""
    return value.detach().cpu().numpy().copy() if torch.is_tensor(value) else value


@dataclass
class TrialRecord:
    """What learning from one sound did: means over its steps, and per-layer weight change."""

    loss: float = float("nan")
    contrastive: float = float("nan")
    diversity: float = float("nan")
    perplexity: float = float("nan")
    grad_norm: float = float("nan")
    skipped_steps: int = 0      # steps left out because their loss or gradient was not finite
    delta_w: dict[str, float] = field(default_factory=dict)
    time_features: float = 0.0  # seconds spent reading features, and learning, on this sound
    time_learn: float = 0.0
    skipped_update: bool = False  # the mode's update was left out (a live run falling behind)


class Learner:
    """A wav2vec 2.0 in one of the training modes of "Don't stop the training".

    Parameters
    ----------
    model : Wav2Vec2ForPreTraining
        Starting weights (``theta0``); the learner owns and changes this model.
    mode : {"frozen", "continuous", "reset"}
        ``frozen`` never updates (the study's "Pretrained"); ``continuous`` takes
        ``steps_per_sound`` self-supervised AdamW steps on each sound after its features are read.
        ``reset`` adapts to each sound exactly as ``continuous``, reads the features of the
        adapted network, then restores the starting weights and optimizer state: transient
        adaptation, no history. (Read before the update, as ``continuous`` does, its features
        would be the frozen network's by construction.)
    lr, steps_per_sound, weight_decay : AdamW settings of the continuous update.
    retention : float
        After each sound, ``theta <- theta0 + retention * (theta - theta0)``. 1.0 is pure
        accumulation (the study); below 1 the network forgets toward its starting weights.
    optimizer_state : dict, optional
        AdamW state to carry over (from the pretraining checkpoint), so the first steps are not
        those of a cold optimizer.
    seed : int
        Seed of the learner's own mask, negative, dropout and Gumbel streams.

    >>> from simulator.model import build_model
    >>> learner = Learner(build_model("tiny"), mode="continuous", lr=1e-3, steps_per_sound=1)
    >>> wave = np.random.default_rng(0).standard_normal(8000).astype(np.float32)
    >>> sorted(learner.features(wave, 16000, 1.0))[:2], learner.features(wave, 16000, 1.0)["cnn"].shape
    (['cnn', 'layer_1'], (1, 128))
    >>> record = learner.learn(wave)
    >>> record.delta_w["layer_1"] > 0
    True
    """

    def __init__(self, model, mode: str = "continuous", lr: float = 1e-4, steps_per_sound: int = 1,
                 retention: float = 1.0, weight_decay: float = 0.0, optimizer_state=None,
                 seed: int = 0, mask_prob: float = 0.4, mask_span: int = 3):
        check_choice("mode", mode, MODES)
        if not 0.0 <= retention <= 1.0:
            raise ValueError(f"retention must lie in [0, 1], got {retention}")
        self.model, self.mode = model, mode
        self.steps_per_sound, self.retention = int(steps_per_sound), float(retention)
        self.mask_prob, self.mask_span = mask_prob, mask_span
        self.streams = RandomStreams(seed, device=next(model.parameters()).device)
        self._params = [p for p in model.parameters() if p.requires_grad]
        self._theta0 = [p.detach().clone() for p in self._params]
        self._layers = {name: list(m.parameters()) for name, m in layer_modules(model).items()}
        # Weights before each update, for ||dW||: buffers made once and refilled per sound.
        self._before = {} if mode == "frozen" else {
            name: [p.detach().clone() for p in ps] for name, ps in self._layers.items()}
        self.optimizer = torch.optim.AdamW(self._params, lr=lr, weight_decay=weight_decay)
        if optimizer_state is not None:
            # A copy: AdamW updates its state in place, and the caller's dict may serve others.
            self.optimizer.load_state_dict(copy.deepcopy(optimizer_state))
            for group in self.optimizer.param_groups:  # the scenario's rate, not the checkpoint's
                group["lr"], group["weight_decay"] = lr, weight_decay
        # The reset mode's starting optimizer state, copied back in place after every sound.
        self._optimizer0 = None if mode != "reset" else {
            p: {k: v.clone() if torch.is_tensor(v) else v for k, v in self.optimizer.state[p].items()}
            for p in self._params if p in self.optimizer.state}

    def state_dict(self) -> dict:
        """What learning has changed, to resume exactly: weights, AdamW state and the random
        streams, as a tree of numpy arrays and JSON scalars (``replay.tree``). The starting
        weights are not in it: they are the checkpoint's, rebuilt by ``build_learner``."""
        optimizer = self.optimizer.state_dict()
        return {"model": {k: _numpy(v) for k, v in self.model.state_dict().items()},
                "optimizer": {"state": {str(i): {k: _numpy(v) for k, v in s.items()}
                                        for i, s in optimizer["state"].items()} or {"none": 0},
                              "param_groups": {str(i): g for i, g in
                                               enumerate(optimizer["param_groups"])}},
                "streams": self.streams.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Continue from what `state_dict` returned, for the same model and mode."""
        device = next(self.model.parameters()).device
        self.model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in
                                    state["model"].items()})
        saved = state["optimizer"]
        groups = [saved["param_groups"][str(i)] for i in range(len(saved["param_groups"]))]
        for group in groups:
            group["betas"] = tuple(group["betas"])  # JSON keeps tuples as lists
        self.optimizer.load_state_dict({
            "state": {int(i): {k: torch.from_numpy(np.array(v)).to(device if v.ndim else "cpu")
                               for k, v in s.items()}
                      for i, s in saved["state"].items() if i != "none"},
            "param_groups": groups})
        self.streams.load_state_dict(state["streams"])

    def observe(self, wave, sample_rate: float, frame_rate: float, offset_s: float = 0.0,
                learn: bool = True, frames=None) -> tuple[dict[str, np.ndarray], TrialRecord]:
        """One trial of the mode: the features the brain is compared with, and what learning did.

        ``learn=False`` reads the features and leaves the weights alone (a live run that cannot
        keep up skips updates so; the record says ``skipped_update``). ``frames`` are the trial's
        brain frames, for a learner that learns from them (`update`); they are never seen
        before the features are read.
        """
        t0 = time.perf_counter()
        if not learn:
            features = self.features(wave, sample_rate, frame_rate, offset_s)
            return features, TrialRecord(delta_w={name: 0.0 for name in self._layers},
                                         time_features=time.perf_counter() - t0,
                                         skipped_update=self.mode != "frozen")
        if self.mode == "reset":
            record = self.learn(wave)
            t1 = time.perf_counter()
            features = self.features(wave, sample_rate, frame_rate, offset_s)
            self.restore()
            record.time_learn, record.time_features = t1 - t0, time.perf_counter() - t1
            return features, record
        features = self.features(wave, sample_rate, frame_rate, offset_s)
        t1 = time.perf_counter()
        record = self.update(wave, sample_rate, frame_rate, offset_s, frames)
        record.time_features, record.time_learn = t1 - t0, time.perf_counter() - t1
        return features, record

    def update(self, wave, sample_rate: float, frame_rate: float, offset_s: float = 0.0,
               frames=None) -> TrialRecord:
        """Learn from one trial after its features were read: here, self-supervised on the sound
        alone (`learn`); a learner supervised by the brain (simulator.brain_tuning) uses the
        trial's ``frames`` too."""
        return self.learn(wave)

    @torch.no_grad()
    def restore(self) -> None:
        """Back to the starting weights and optimizer state (the ``reset`` mode, after each sound)."""
        for p, p0 in zip(self._params, self._theta0):
            p.copy_(p0)
        if self._optimizer0 is None:
            return
        for p in self._params:
            saved = self._optimizer0.get(p)
            if saved is None:  # no state before the first step: back to none
                self.optimizer.state.pop(p, None)
                continue
            state = self.optimizer.state[p]
            for k, v in saved.items():
                if torch.is_tensor(v) and torch.is_tensor(state.get(k)) and state[k].shape == v.shape:
                    state[k].copy_(v)  # in place: no per-sound allocation of optimizer-sized tensors
                else:
                    state[k] = v.clone() if torch.is_tensor(v) else v

    def features(self, wave, sample_rate: float, frame_rate: float,
                 offset_s: float = 0.0) -> dict[str, np.ndarray]:
        """Pooled activations with the current weights, before any learning from this sound."""
        return extract_features(self.model, wave, sample_rate, frame_rate, offset_s)

    def learn(self, wave) -> TrialRecord:
        """Update on one sound according to the mode and report what changed."""
        if self.mode == "frozen":
            return TrialRecord(delta_w={name: 0.0 for name in self._layers})
        self.mark_weights()
        steps = [ssl_step(self.model, self.optimizer, wave, self.streams, self.mask_prob,
                          self.mask_span) for _ in range(self.steps_per_sound)]
        if self.retention < 1.0:
            self._relax()
        mean = lambda key: float(np.mean([getattr(s, key) for s in steps]))  # noqa: E731
        return TrialRecord(mean("loss"), mean("contrastive"), mean("diversity"),
                           mean("perplexity"), mean("grad_norm"), sum(s.skipped for s in steps),
                           self.weight_change())

    @torch.no_grad()
    def mark_weights(self) -> None:
        """Keep the weights before an update, for `weight_change`."""
        for name, ps in self._layers.items():
            for buffer, p in zip(self._before[name], ps):
                buffer.copy_(p)

    @torch.no_grad()
    def weight_change(self) -> dict[str, float]:
        """||dW|| per layer since `mark_weights`."""
        return {name: float(torch.sqrt(sum(((p - q) ** 2).sum()
                                           for p, q in zip(ps, self._before[name]))))
                for name, ps in self._layers.items()}

    @torch.no_grad()
    def _relax(self):
        # theta <- theta0 + rho (theta - theta0) == rho * theta + (1 - rho) * theta0
        for p, p0 in zip(self._params, self._theta0):
            p.mul_(self.retention).add_(p0, alpha=1.0 - self.retention)
