"""Brain-aligned fine-tuning: a network read out at one layer by a causal temporal head, trained
with MSE on brain frames (Freteault et al. 2025), offline before a replay or online after each trial.

`BrainAligner` holds the network, the head and their AdamW; `train_offline` fits them on
training sessions with early stopping on validation sounds; `heldout_sums` scores them on held-out
trials; `BrainLearner` is the ``brain-continuous`` mode's learner: one supervised step (or
``steps_per_sound``) with each trial's frames, after the trial's features were read.
"""
from __future__ import annotations

import copy
import time

import numpy as np
import torch
import torch.nn.functional as F

from encoders.lags import lagged

from .features import pool_frames
from .learner import Learner, TrialRecord
from .model import hidden_spaces, layer_modules, layer_names, model_input


class TemporalHead(torch.nn.Module):
    """Causal temporal convolution from one layer's frame features to every voxel.

    Frame t of the prediction reads the features of frames t-k+1 .. t (zeros before the trial's
    first frame and after its sound), so it learns each voxel's hemodynamic delay, as FIR lags do
    for the encoder. Each frame's features are layer-normalised first (no learned scale), so the
    head sees one scale whatever the layer and however far the network drifts. It starts at zero:
    its first predictions are the voxels' means, and the network gets no gradient through an
    arbitrary head.

    >>> head = TemporalHead(8, 3, kernel=2)
    >>> head(torch.ones(2, 8), n_frames=5).shape
    torch.Size([5, 3])
    """

    def __init__(self, n_features: int, n_voxels: int, kernel: int = 5):
        super().__init__()
        self.kernel = int(kernel)
        self.conv = torch.nn.Conv1d(int(n_features), int(n_voxels), self.kernel)
        torch.nn.init.zeros_(self.conv.weight)
        torch.nn.init.zeros_(self.conv.bias)

    def forward(self, features: torch.Tensor, n_frames: int) -> torch.Tensor:
        """(n_sound_frames, n_features) -> (n_frames, n_voxels), standardised units."""
        x = F.layer_norm(features, features.shape[-1:])[:n_frames]
        x = F.pad(x, (0, 0, 0, n_frames - len(x)))  # the trial's frames after the sound: zeros
        x = F.pad(x.T[None], (self.kernel - 1, 0))   # causal: only past frames reach frame t
        return self.conv(x)[0].T


class VoxelMoments:
    """Running mean and standard deviation per voxel of the frames seen (finite values only),
    merged batch by batch (Chan et al.'s parallel update), so the head's targets are standardised
    with what was seen so far: a live run never looks ahead.

    >>> m = VoxelMoments(2); m.update(np.array([[1.0, np.nan], [3.0, 2.0]]))
    >>> m.mean.tolist(), m.scale.tolist()
    ([[2.0, 2.0]], [[1.0, 1.0]])
    """

    def __init__(self, n_voxels: int):
        self.n = np.zeros(int(n_voxels))
        self._mean = np.zeros(int(n_voxels))
        self.m2 = np.zeros(int(n_voxels))

    def update(self, Y: np.ndarray) -> None:
        Y = np.asarray(Y, dtype=np.float64)
        ok = np.isfinite(Y)
        n_b = ok.sum(axis=0)
        if not n_b.any():
            return
        Z = np.where(ok, Y, 0.0)
        mean_b = Z.sum(axis=0) / np.maximum(n_b, 1)
        m2_b = (np.where(ok, Y - mean_b, 0.0) ** 2).sum(axis=0)
        n = self.n + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * n_b / np.maximum(n, 1)
        self.m2 = self.m2 + m2_b + delta ** 2 * self.n * n_b / np.maximum(n, 1)
        self.n = n

    @property
    def mean(self) -> np.ndarray:
        return self._mean[None].astype(np.float32)

    @property
    def scale(self) -> np.ndarray:
        # A voxel seen once, or constant (masked to 0.0), keeps scale 1: its targets stay finite.
        sd = np.sqrt(self.m2 / np.maximum(self.n, 1))
        return np.where((self.n > 1) & (sd > 1e-8), sd, 1.0)[None].astype(np.float32)

    def state_dict(self) -> dict:
        return {"n": self.n.copy(), "mean": self._mean.copy(), "m2": self.m2.copy()}

    def load_state_dict(self, state: dict) -> None:
        self.n, self._mean, self.m2 = (np.array(state[k], dtype=np.float64) for k in ("n", "mean", "m2"))


def resolve_layer(model, name: str, what: str) -> int:
    """Index in `layer_names` of ``name`` ("last": the deepest layer); one-line error otherwise."""
    names = layer_names(model)
    if name == "last":
        return len(names) - 1
    if name not in names:
        raise ValueError(f"Invalid value for the '{what}' parameter. Allowed values are 'last' "
                         f"and the model's layers {names}, but got {name!r} instead.")
    return names.index(name)


class BrainAligner:
    """A network read at ``layer`` by a `TemporalHead`, both trained with MSE on brain frames.

    Parameters
    ----------
    model : the network (wav2vec 2.0 or SoundNet); the aligner freezes what must not learn.
    n_voxels : int
    layer : the layer the head reads ("last": the deepest).
    train_from : the first layer that learns, up to ``layer`` ("last": ``layer`` alone); layers
        below it and above ``layer`` stay frozen.
    learn_network : False trains the head alone (the frozen and random-init references).
    kernel : the head's causal kernel, in brain frames.
    lr, head_lr, weight_decay : AdamW settings of the network's and the head's parameters.
    sample_rate : the network's audio rate (a short silence is run once to size the head).
    """

    def __init__(self, model, n_voxels: int, layer: str = "last", train_from: str = "last",
                 learn_network: bool = True, kernel: int = 5, lr: float = 1e-4,
                 head_lr: float = 1e-3, weight_decay: float = 0.0, sample_rate: int = 16000):
        self.model = model
        self.index = resolve_layer(model, layer, "alignment.layer")
        first = self.index if train_from == "last" else resolve_layer(model, train_from,
                                                                      "alignment.train_from")
        if first > self.index:
            raise ValueError(f"alignment.train_from ({train_from!r}) lies above alignment.layer "
                             f"({layer!r}): the layers that learn must feed the layer the head reads")
        names = layer_names(model)
        learning = self._learning_parameters(names[first:self.index + 1]) if learn_network else set()
        for p in model.parameters():
            p.requires_grad_(id(p) in learning)
        self.network_params = [p for p in model.parameters() if p.requires_grad]
        with torch.no_grad():
            probe = self.features(np.zeros(2 * int(sample_rate), np.float32), sample_rate, 1.0)
        device = next(model.parameters()).device
        self.head = TemporalHead(probe.shape[1], n_voxels, kernel).to(device)
        groups = [{"params": self.network_params, "lr": lr}] if self.network_params else []
        groups.append({"params": list(self.head.parameters()), "lr": head_lr})
        self.optimizer = torch.optim.AdamW(groups, lr=head_lr, weight_decay=weight_decay)
        self.targets = VoxelMoments(n_voxels)

    def _learning_parameters(self, names) -> set[int]:
        modules = layer_modules(self.model)
        return {id(p) for name in names for p in modules[name].parameters()}

    @property
    def learns_network(self) -> bool:
        return bool(self.network_params)

    def features(self, wave, sample_rate: float, frame_rate: float,
                 offset_s: float = 0.0) -> torch.Tensor:
        """The read layer's activations pooled to brain frames; with autograd when the network
        learns and the caller has it on."""
        # Eval mode: no dropout, and SoundNet's batch norms keep their statistics (a batch of one
        # sound would replace them); the gradient flows all the same.
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.set_grad_enabled(torch.is_grad_enabled() and self.learns_network):
                x = model_input(self.model, wave)
                h = hidden_spaces(self.model, x)[self.index][0].float()
                return pool_frames(h, x.shape[1], sample_rate, frame_rate, offset_s)
        finally:
            self.model.train(was_training)

    def _standardised(self, frames) -> torch.Tensor:
        y = (np.asarray(frames, dtype=np.float32) - self.targets.mean) / self.targets.scale
        return torch.from_numpy(y).to(self.head.conv.weight.device)

    def loss(self, features: torch.Tensor, frames) -> torch.Tensor:
        """MSE between the head's predictions and the standardised frames, over finite values."""
        y = self._standardised(frames)
        ok = torch.isfinite(y)
        return ((self.head(features, len(y)) - torch.nan_to_num(y)) ** 2)[ok].mean()

    def step(self, wave, sample_rate: float, frame_rate: float, offset_s: float,
             frames) -> tuple[float, float, bool]:
        """One AdamW step on one trial: ``(loss, gradient norm, skipped)``; a step whose loss or
        gradient is not finite is left out."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(self.features(wave, sample_rate, frame_rate, offset_s), frames)
        params = self.network_params + list(self.head.parameters())
        if not torch.isfinite(loss):
            return float(loss.detach()), float("nan"), True
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(params, float("inf")))
        if not np.isfinite(norm):
            self.optimizer.zero_grad(set_to_none=True)
            return float(loss.detach()), norm, True
        self.optimizer.step()
        return float(loss.detach()), norm, False

    @torch.no_grad()
    def predict(self, wave, sample_rate: float, frame_rate: float, offset_s: float,
                n_frames: int) -> np.ndarray:
        """Predicted frames (n_frames, n_voxels) in the recording's units."""
        z = self.head(self.features(wave, sample_rate, frame_rate, offset_s), n_frames)
        return z.cpu().numpy() * self.targets.scale + self.targets.mean

    def state(self) -> dict:
        """What training changed (network, head, targets' moments), to restore the best epoch."""
        return {"model": copy.deepcopy(self.model.state_dict()),
                "head": copy.deepcopy(self.head.state_dict())}

    def restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.head.load_state_dict(state["head"])


def train_offline(aligner: BrainAligner, train, validation, epochs: int, patience: int,
                  seed: int, log=None, name: str = "brain-aligned") -> dict:
    """Fit ``aligner`` on ``train`` trials (`replay.trials.Trial`): first the head alone in
    closed form (`fit_ridge_head`, the penalty chosen on ``validation``), which is all a frozen
    network gets; then, if the network learns, one AdamW step of network and head per trial in a
    seeded order each epoch, stopping when the validation loss has not improved for ``patience``
    epochs and keeping the best epoch's weights (epoch 0 is the ridge head on the starting
    network, so fine-tuning can only keep or improve the validation loss). Targets are
    standardised with the training frames' moments. Returns the history:
    ``{"alpha", "train": [...], "validation": [...], "best_epoch": k}`` (index 0: epoch 0)."""
    for trial in train:
        aligner.targets.update(trial.frames)
    alpha = fit_ridge_head(aligner, train, validation)
    history = {"alpha": alpha, "train": [validation_loss(aligner, train)],
               "validation": [validation_loss(aligner, validation)], "best_epoch": 0}
    if log:
        log(f"{name}: ridge head (alpha {alpha:g}): validation MSE {history['validation'][0]:.4f}")
    if not aligner.learns_network:
        return history
    rng = np.random.default_rng([seed, 0xA11])
    best, best_state, waited = history["validation"][0], aligner.state(), 0
    for epoch in range(1, int(epochs) + 1):
        t0 = time.perf_counter()
        losses = [aligner.step(train[i].waveform, train[i].sample_rate, train[i].frame_rate,
                               train[i].offset_s, train[i].frames)[0]
                  for i in rng.permutation(len(train))]
        val = validation_loss(aligner, validation)
        history["train"].append(float(np.nanmean(losses)))
        history["validation"].append(val)
        if log:
            log(f"{name}: epoch {epoch}: train MSE {history['train'][-1]:.4f}, validation MSE "
                f"{val:.4f} ({time.perf_counter() - t0:.1f} s)")
        if val < best:
            best, best_state, waited, history["best_epoch"] = val, aligner.state(), 0, epoch
        else:
            waited += 1
            if waited >= patience:
                break
    aligner.restore(best_state)
    return history


RIDGE_ALPHAS = tuple(10.0 ** np.arange(-1, 7))  # penalties of the closed-form head


def _design(aligner: BrainAligner, features: torch.Tensor, n_frames: int) -> np.ndarray:
    """The head's input as a matrix: its layer-normed features at lags 0..kernel-1, so that
    ``design @ W`` is what the convolution computes (`TemporalHead.forward`)."""
    x = F.layer_norm(features, features.shape[-1:])[:n_frames]
    x = F.pad(x, (0, 0, 0, n_frames - len(x))).detach().cpu().numpy().astype(np.float64)
    return lagged(x, range(aligner.head.kernel))


def fit_ridge_head(aligner: BrainAligner, train, validation) -> float:
    """Set the head to the ridge solution on ``train``'s frames (standardised targets, an
    intercept), the penalty among RIDGE_ALPHAS with the least ``validation`` MSE; return it.
    Non-finite target values count as the voxel's mean (0)."""
    def design(trials):
        X = [_design(aligner, _features(aligner, t), len(t.frames)) for t in trials]
        Y = [np.nan_to_num(_standardised_np(aligner, t.frames)) for t in trials]
        return np.concatenate(X), np.concatenate(Y)

    X, Y = design(train)
    Xv, Yv = design(validation)
    mx, my = X.mean(0), Y.mean(0)
    U, sv, Vt = np.linalg.svd(X - mx, full_matrices=False)
    UtY = U.T @ (Y - my)
    best = (np.inf, None, None)
    for alpha in RIDGE_ALPHAS:
        W = Vt.T @ ((sv / (sv ** 2 + alpha))[:, None] * UtY)
        b = my - mx @ W
        err = float(np.mean((Xv @ W + b - Yv) ** 2))
        if err < best[0]:
            best = (err, alpha, (W, b))
    _, alpha, (W, b) = best
    k, d = aligner.head.kernel, W.shape[0] // aligner.head.kernel
    # Block L of W (lag L) is the convolution's tap k-1-L (its input is padded k-1 on the left).
    weight = W.reshape(k, d, -1)[::-1].transpose(2, 1, 0)
    with torch.no_grad():
        aligner.head.conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
        aligner.head.conv.bias.copy_(torch.from_numpy(b))
    return float(alpha)


def _standardised_np(aligner: BrainAligner, frames) -> np.ndarray:
    return (np.asarray(frames, dtype=np.float64) - aligner.targets.mean) / aligner.targets.scale


def _features(aligner: BrainAligner, trial) -> torch.Tensor:
    with torch.no_grad():
        return aligner.features(trial.waveform, trial.sample_rate, trial.frame_rate, trial.offset_s)


@torch.no_grad()
def validation_loss(aligner: BrainAligner, trials) -> float:
    """Mean MSE over ``trials`` (standardised units), the early-stopping criterion."""
    if not trials:
        return float("nan")
    return float(np.mean([float(aligner.loss(_features(aligner, t), t.frames)) for t in trials]))


def heldout_sums(aligner: BrainAligner, trials) -> dict[str, np.ndarray]:
    """Per held-out trial and voxel, the sums R² is pooled from: squared error of the aligner's
    predictions ``sse``, and the frames' ``sum_y``, ``sum_y2`` and ``count`` (finite values)."""
    n, v = len(trials), trials[0].frames.shape[1]
    out = {k: np.zeros((n, v)) for k in ("sse", "sum_y", "sum_y2", "count")}
    for i, t in enumerate(trials):
        y = np.asarray(t.frames, dtype=np.float64)
        ok = np.isfinite(y)
        y0 = np.where(ok, y, 0.0)
        p = aligner.predict(t.waveform, t.sample_rate, t.frame_rate, t.offset_s, len(y))
        out["sse"][i] = (np.where(ok, y0 - p, 0.0) ** 2).sum(axis=0)
        out["sum_y"][i], out["sum_y2"][i], out["count"][i] = y0.sum(0), (y0 ** 2).sum(0), ok.sum(0)
    return out


class BrainLearner(Learner):
    """The ``brain-continuous`` mode: after each trial's features are read, ``steps_per_sound``
    supervised steps of the network and head on that trial's frames (closed-loop alignment),
    then the relaxation toward the starting weights of ``retention``. Scored prequentially like
    every mode: the features sent to the encoder come before the network saw the frames.

    ``make_aligner(n_voxels)`` wraps ``model`` in a `BrainAligner`; it is called at once when
    ``n_voxels`` is given, else at the first trial (a live run learns the voxel count from its
    first frames). The head's targets are standardised with the frames seen so far.
    """

    def __init__(self, model, make_aligner, n_voxels: int | None = None, steps_per_sound: int = 1,
                 retention: float = 1.0, seed: int = 0):
        super().__init__(model, "continuous", steps_per_sound=steps_per_sound,
                         retention=retention, seed=seed)
        self._make_aligner, self.aligner = make_aligner, None
        if n_voxels is not None:
            self._build(n_voxels)

    def _build(self, n_voxels: int) -> None:
        self.aligner = self._make_aligner(int(n_voxels))
        # Only what the aligner lets learn relaxes; one optimizer: the checkpointed state is its.
        self._params = self.aligner.network_params
        self._theta0 = [p.detach().clone() for p in self._params]
        self.optimizer = self.aligner.optimizer

    def learn(self, wave) -> TrialRecord:
        raise ValueError("the brain-continuous mode learns from a trial's brain frames: use "
                         "observe(..., frames=...) or update(...)")

    def update(self, wave, sample_rate: float, frame_rate: float, offset_s: float = 0.0,
               frames=None) -> TrialRecord:
        if frames is None:
            raise ValueError("the brain-continuous mode needs each trial's brain frames")
        if self.aligner is None:
            self._build(np.shape(frames)[1])
        self.mark_weights()
        self.aligner.targets.update(frames)
        steps = [self.aligner.step(wave, sample_rate, frame_rate, offset_s, frames)
                 for _ in range(self.steps_per_sound)]
        if self.retention < 1.0:
            self._relax()
        return TrialRecord(loss=float(np.mean([s[0] for s in steps])),
                           grad_norm=float(np.mean([s[1] for s in steps])),
                           skipped_steps=sum(s[2] for s in steps), delta_w=self.weight_change())

    def state_dict(self) -> dict:
        return {**super().state_dict(),
                "head": {k: v.detach().cpu().numpy().copy()
                         for k, v in self.aligner.head.state_dict().items()},
                "targets": self.aligner.targets.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if self.aligner is None:
            self._build(len(state["head"]["conv.bias"]))
        super().load_state_dict(state)
        self.aligner.head.load_state_dict({k: torch.from_numpy(np.array(v))
                                           for k, v in state["head"].items()})
        self.aligner.targets.load_state_dict(state["targets"])
