"""One run's trials through its learner and the encoder service, and the records they leave.

Shared by the replay of a stored session (`simulator.run`) and a live acquisition
(`simulator.live`): for each trial the learner gives its features and learns, the features and
brain frames go to the encoder (pipelined: it scores trial k while the learner takes k+1), and the
trial's record is kept. ``finish`` returns what a results store keeps of the run.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from encoders.client import EncoderClient
from replay.tree import flatten, unflatten

from .learner import Learner, TrialRecord
from .model import layer_names
from .results import row_dtype

TRIAL_FIELDS = ("loss", "contrastive", "diversity", "perplexity", "grad_norm", "skipped_steps",
                "skipped_update")
TIMERS = ("features", "learn", "encoder", "total")


def align(features: np.ndarray, n_frames: int) -> np.ndarray:
    """Sound features placed on the trial's frames: zeros after the sound, cut at the window.

    >>> align(np.ones((2, 3), np.float32), 4)[:, 0].tolist()
    [1.0, 1.0, 0.0, 0.0]
    """
    out = np.zeros((n_frames, features.shape[1]), dtype=np.float32)
    k = min(n_frames, len(features))
    out[:k] = features[:k]
    return out


def row_arrays(rows: dict) -> dict[str, np.ndarray]:
    """Per-trial records as arrays, in the dtypes the results store keeps."""
    return {k: np.asarray(v, dtype=row_dtype(k)) for k, v in rows.items()}


@dataclass
class Step:
    """What one trial did: the learner's record, the encoder replies that came back meanwhile
    (``(trial, per-layer r)`` of earlier trials), and its seconds per stage."""

    record: TrialRecord
    replies: list
    times: dict[str, float]


class TrialLoop:
    """The trial loop of one run on an opened encoder session.

    Parameters
    ----------
    learner : Learner
    client : EncoderClient
        Connected to the service; ``session`` is opened there (``open``) before the first step.
    session : str
        The run's session key in the service.
    layers : list of str
        The layers the encoder scores (a subset of the learner's).
    rows : dict, optional
        Records of the trials before a checkpoint (``state`` of an earlier loop), to resume.
    """

    def __init__(self, learner: Learner, client: EncoderClient, session: str, layers,
                 rows: dict | None = None):
        self.learner, self.client, self.session = learner, client, session
        self.layers = list(layers)
        self.all_layers = layer_names(learner.model)
        self.rows = {k: list(v) for k, v in rows.items()} if rows else {
            k: [] for k in ("event", "stimulus", "repeat", *TRIAL_FIELDS, "delta_w", "trial_r",
                            *(f"time_{t}" for t in TIMERS))}
        self.trial_r = dict(enumerate(self.rows.pop("trial_r")))

    def step(self, trial, learn: bool = True) -> Step:
        """One trial (a `replay.trials.Trial`): features, learning (unless ``learn`` is False),
        sent for scoring."""
        t0 = time.perf_counter()
        features, record = self.learner.observe(trial.waveform, trial.sample_rate,
                                                trial.frame_rate, trial.offset_s, learn=learn,
                                                frames=trial.frames)
        t1 = time.perf_counter()
        aligned = {name: align(features[name], len(trial.frames)) for name in self.layers}
        # Pipelined: the encoder scores this trial while the learner takes the next sound; the
        # time recorded is what sending (and waiting for room in the window) cost this trial.
        replies = self.client.submit(self.session, trial.index, trial.event, aligned, trial.frames)
        self.trial_r.update(replies)
        t2 = time.perf_counter()
        times = {"features": record.time_features, "learn": record.time_learn,
                 "encoder": t2 - t1, "total": t2 - t0}
        for k, v in (("event", trial.event), ("stimulus", trial.stimulus),
                     ("repeat", trial.repeat),
                     ("delta_w", [record.delta_w[name] for name in self.all_layers]),
                     *((f"time_{t}", times[t]) for t in TIMERS)):
            self.rows[k].append(v)
        for k in TRIAL_FIELDS:
            self.rows[k].append(getattr(record, k))
        for name in self.layers:  # the sound's mean activation, for representational drift
            self.rows.setdefault(f"pooled/{name}", []).append(features[name].mean(axis=0))
        return Step(record, replies, times)

    def last_trial(self) -> dict:
        """The newest trial's record: ``{field: value}`` (its score comes later, `trial_r`)."""
        return {name: values[-1] for name, values in self.rows.items()}

    def drain(self) -> list:
        """Wait for every trial in flight; return their replies."""
        replies = self.client.drain()
        self.trial_r.update(replies)
        return replies

    def state(self) -> tuple[int, dict]:
        """For a checkpoint, after every reply is in: (the encoder's next trial, a tree with the
        learner's and the encoder's states and the records so far)."""
        self.drain()
        at, encoder = self.client.snapshot(self.session)
        rows = unflatten({}, row_arrays({**self.rows, "trial_r": self.ordered_r()}))
        return at, {"learner": self.learner.state_dict(), "encoder": encoder, "rows": rows}

    def ordered_r(self) -> list:
        return [self.trial_r[i] for i in range(len(self.trial_r))]

    def finish(self) -> tuple[dict[str, np.ndarray], dict]:
        """Close the encoder session; return the per-trial records (arrays) and its final reply."""
        self.drain()
        final = self.client.finish(self.session)
        return row_arrays({**self.rows, "trial_r": self.ordered_r()}), final


def rows_of(state: dict) -> dict:
    """The records of a checkpoint's ``rows`` tree (``TrialLoop.state``), to resume a loop."""
    return flatten(state["rows"])[1]
