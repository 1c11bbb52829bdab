"""Does alignment generalise? A downstream check in the spirit of the HEAR benchmark: a linear probe
that classifies the categories of held-out synthetic sounds from a network's clip embeddings.

Each sound's embedding at a layer is its activations averaged over the whole sound (no gradient,
eval mode). The corpus (``probe.sounds`` sounds of ``probe.duration_s`` s, drawn by ``probe.seed``,
so other sounds than a synthetic recording's) is split, stratified by category, into training and
held-out sounds (``probe.test_fraction``). A standardised logistic regression per layer is fitted
on the training sounds; the layer is chosen by its cross-validated accuracy on them alone, and
its accuracy on the held-out sounds is reported with a Wilson 95% interval.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import binomtest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .features import extract_features
from .sounds import CATEGORIES, make_sound_set


def clip_embeddings(model, audio, sample_rate: int) -> dict[str, np.ndarray]:
    """``{layer: (n_sounds, n_features)}``: each sound's activations averaged over the sound."""
    # A "frame rate" of one frame per sound pools every model frame of the sound into one.
    per_sound = [extract_features(model, wave, sample_rate, sample_rate / len(wave)) for wave in audio]
    return {name: np.concatenate([f[name][:1] for f in per_sound]) for name in per_sound[0]}


def wilson_interval(correct: int, total: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (scipy).

    >>> [round(v, 3) for v in wilson_interval(8, 10)]
    [0.49, 0.943]
    """
    ci = binomtest(int(correct), int(total)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def linear_probe(embeddings: dict[str, np.ndarray], labels, test_fraction: float = 0.5,
                 seed: int = 0) -> tuple[dict[str, np.ndarray], dict]:
    """Fit and test a linear probe per layer; returns the arrays a results store keeps
    (``correct``: (layer, held-out sound) bool, ``cv_accuracy`` per layer, ``label`` of each
    held-out sound as an index into the summary's ``categories``) and a summary (chosen layer,
    its held-out accuracy and interval).

    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat(["a", "b"], 20)
    >>> X = rng.standard_normal((40, 5)) + (labels == "a")[:, None] * 3.0
    >>> arrays, summary = linear_probe({"layer": X}, labels, seed=0)
    >>> summary["layer"], summary["accuracy"]
    ('layer', 1.0)
    """
    labels = np.asarray(labels)
    train, test, n_folds = split(labels, test_fraction, seed)
    folds = StratifiedKFold(n_folds, shuffle=True, random_state=seed)
    names = list(embeddings)
    cv, correct = np.zeros(len(names)), np.zeros((len(names), len(test)), dtype=bool)
    for i, name in enumerate(names):
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        X = embeddings[name]
        cv[i] = cross_val_score(probe, X[train], labels[train], cv=folds).mean()
        correct[i] = probe.fit(X[train], labels[train]).predict(X[test]) == labels[test]
    best = int(np.argmax(cv))  # chosen on the training sounds alone
    k, n = int(correct[best].sum()), len(test)
    low, high = wilson_interval(k, n)
    categories = sorted(set(labels.tolist()))
    summary = {"layer": names[best], "accuracy": k / n, "ci": [low, high], "correct": k,
               "n_test": n, "n_train": len(train), "layers": names, "categories": categories}
    # Labels as indices into the summary's categories: Zarr v3 has no stable string dtype yet.
    label = np.searchsorted(categories, labels[test]).astype(np.int64)
    return {"correct": correct, "cv_accuracy": cv, "label": label}, summary


def split(labels, test_fraction: float, seed: int = 0):
    """``(train, test, n_folds)``: indices of a split stratified by category, and the folds of
    the layer choice (up to 4, at least 2 sounds of each category in each); a one-line error
    naming ``probe.sounds`` and ``probe.test_fraction`` when the sounds are too few."""
    labels = np.asarray(labels)
    why = (f"probe.sounds = {len(labels)} with probe.test_fraction = {test_fraction} leaves too "
           "few sounds of each category to train, cross-validate (2 per category) and test "
           "(1 per category) on; raise probe.sounds (16 or more) or change probe.test_fraction")
    try:
        train, test = train_test_split(np.arange(len(labels)), test_size=test_fraction,
                                       stratify=labels, random_state=seed)
    except ValueError:
        raise ValueError(why) from None
    n_folds = int(min(4, np.unique(labels[train], return_counts=True)[1].min()))
    if n_folds < 2 or len(np.unique(labels[test])) < len(np.unique(labels)):
        raise ValueError(why)
    return train, test, n_folds


def check_probe(cfg: dict) -> None:
    """Refuse, before any run starts, ``probe`` settings the probe cannot run with."""
    p = cfg["probe"]
    if p["sounds"] > 0:
        labels = [CATEGORIES[i % len(CATEGORIES)] for i in range(p["sounds"])]  # make_sound_set's
        split(labels, p["test_fraction"], p["seed"])


def run_probe(model, cfg: dict) -> tuple[dict[str, np.ndarray], dict]:
    """The probe of a run's network as the run left it, on the scenario's ``probe`` corpus."""
    p = cfg["probe"]
    rate = cfg["model"]["sample_rate"]
    sounds = make_sound_set(p["sounds"], p["duration_s"], seed=p["seed"], sample_rate=rate)
    return linear_probe(clip_embeddings(model, sounds.audio, rate), sounds.categories,
                        p["test_fraction"], p["seed"])
