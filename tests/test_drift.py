"""encoders.drift.PageHinkley: every stream detects exactly where river's PageHinkley does."""
import random

import numpy as np
import pytest
from river import drift as river_drift

from encoders.drift import PageHinkley

N_STREAMS, N_STEPS = 50, 2000
# River's defaults; a sensitive set that detects (and so resets) often; one with no forgetting,
# no tolerance and no warm-up, where a stream may detect at its first value after a reset.
PARAM_SETS = {
    "defaults": {},
    "sensitive": dict(min_instances=5, delta=0.05, threshold=5.0, alpha=0.99),
    "bare": dict(min_instances=1, delta=0.0, threshold=2, alpha=1.0),
}


def planted_streams(seed=0, n_streams=N_STREAMS, n_steps=N_STEPS):
    """Noisy streams (steps x streams): a fifth unchanged, the rest with 1 to 3 mean shifts."""
    rng = np.random.default_rng(seed)
    X = rng.normal(0.0, rng.uniform(0.2, 2.0, n_streams), size=(n_steps, n_streams))
    X[:, 1::7] = rng.standard_t(3, size=X[:, 1::7].shape)  # heavy tails in some streams
    for s in range(n_streams):
        if s % 5 == 0:
            continue
        for start in np.sort(rng.choice(np.arange(50, n_steps), rng.integers(1, 4), replace=False)):
            X[start:, s] += rng.choice([-1, 1]) * rng.uniform(0.5, 5.0)
    return X


def river_detections(X, **params):
    """Detection steps of river's detector, run on each stream alone."""
    found = []
    for s in range(X.shape[1]):
        ph = river_drift.PageHinkley(**params)
        steps = []
        for t, v in enumerate(X[:, s].tolist()):
            ph.update(v)
            if ph.drift_detected:
                steps.append(t)
        found.append(steps)
    return found


def run(ph, X):
    """Masks (steps x streams) of the detections of ``ph`` fed ``X`` row by row."""
    return np.array([ph.update(x) for x in X])


def steps_per_stream(masks):
    return [np.flatnonzero(masks[:, s]).tolist() for s in range(masks.shape[1])]


@pytest.fixture(scope="module")
def X():
    return planted_streams()


@pytest.mark.parametrize("mode", ["up", "down", "both"])
@pytest.mark.parametrize("params", PARAM_SETS.values(), ids=PARAM_SETS.keys())
def test_detections_equal_rivers_stream_by_stream(X, mode, params):
    expected = river_detections(X, mode=mode, **params)
    ph = PageHinkley(N_STREAMS, mode=mode, **params)
    got = steps_per_stream(run(ph, X))
    assert got == expected
    assert ph.n_detections.tolist() == [len(steps) for steps in expected]
    # The comparison means something: changes are found, and some streams reset and find more.
    assert sum(map(len, expected)) > 0
    assert max(map(len, expected)) >= 2


@pytest.mark.parametrize("params", [PARAM_SETS["sensitive"], PARAM_SETS["bare"]])
def test_state_equals_rivers_to_the_bit(X, params):
    """Rounding that rarely flips a detection still shows here: same floats, same pending resets."""
    X = X[:700]
    ph = PageHinkley(N_STREAMS, **params)
    run(ph, X)
    ours = ph.state_dict()
    theirs = {k: [] for k in ("n", "mean", "sum_increase", "sum_decrease", "min_increase",
                              "max_decrease", "drift_detected")}
    for s in range(N_STREAMS):
        ref = river_drift.PageHinkley(**params)
        for v in X[:, s].tolist():
            ref.update(v)
        for k, v in [("n", ref._x_mean.n), ("mean", ref._x_mean.get()),
                     ("sum_increase", ref._sum_increase), ("sum_decrease", ref._sum_decrease),
                     ("min_increase", ref._min_increase), ("max_decrease", ref._max_decrease),
                     ("drift_detected", ref.drift_detected)]:
            theirs[k].append(v)
    # Streams that detected at the last update hold their state until the next one, as river's.
    assert any(theirs["drift_detected"])
    for k, v in theirs.items():
        np.testing.assert_array_equal(ours[k], np.array(v), err_msg=k)


def test_rivers_own_example():
    """The example of river's docstring: one change, found at index 1006."""
    rng = random.Random(12345)
    stream = rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)
    ph = PageHinkley(1)
    assert [t for t, v in enumerate(stream) if ph.update([v])[0]] == [1006]


@pytest.mark.parametrize("mode, changed", [("up", range(0, 5)), ("down", range(5, 10)),
                                           ("both", range(0, 10))])
def test_planted_change_found_soon_after_in_its_streams_only(mode, changed):
    rng = np.random.default_rng(1)
    X = rng.normal(1.0, 0.2, size=(1200, 20))
    X[500:, 0:5] += 2.0    # error rises in streams 0-4 at step 500
    X[700:, 5:10] -= 2.0   # and falls in streams 5-9 at step 700
    masks = run(PageHinkley(20, mode=mode), X)
    found = steps_per_stream(masks)
    for s in range(20):
        if s in changed:
            start = 500 if s < 5 else 700
            assert len(found[s]) == 1 and start < found[s][0] <= start + 40, (s, found[s])
        else:
            assert found[s] == [], (s, found[s])


def test_state_dict_round_trip_continues_as_uninterrupted(X):
    params = PARAM_SETS["sensitive"]
    whole = run(PageHinkley(N_STREAMS, **params), X)
    # Stop just after a detection, so the reset that river defers to the next update must
    # survive the checkpoint.
    split = int(np.flatnonzero(whole.any(axis=1))[3]) + 1
    first = PageHinkley(N_STREAMS, **params)
    head = run(first, X[:split])
    state = first.state_dict()
    assert state["drift_detected"].any()
    state["mean"] += 1.0  # a copy: the detector keeps its own
    assert not np.array_equal(first.state_dict()["mean"], state["mean"])

    restored = PageHinkley(3).load_state_dict(first.state_dict())  # parameters come with it
    assert (restored.n_streams, restored.threshold, restored.alpha) == (N_STREAMS, 5.0, 0.99)
    tail = run(restored, X[split:])
    np.testing.assert_array_equal(np.concatenate([head, tail]), whole)
    np.testing.assert_array_equal(restored.n_detections, whole.sum(axis=0))
    assert all(v.dtype == np.float64 for k, v in first.state_dict().items()
               if k in ("n", "mean", "sum_increase", "sum_decrease", "min_increase",
                        "max_decrease"))


@pytest.mark.parametrize("name, value, allowed", [
    ("n_streams", 0, "integers >= 1"),
    ("n_streams", 2.0, "integers >= 1"),
    ("min_instances", 0, "integers >= 1"),
    ("min_instances", True, "integers >= 1"),
    ("delta", -0.1, "numbers >= 0"),
    ("delta", float("nan"), "numbers >= 0"),
    ("threshold", -1, "numbers > 0"),
    ("threshold", 0.0, "numbers > 0"),
    ("threshold", float("inf"), "numbers > 0"),
    ("threshold", "50", "numbers > 0"),
    ("alpha", 0.0, r"numbers in \(0, 1\]"),
    ("alpha", 1.5, r"numbers in \(0, 1\]"),
    ("mode", "sideways", "'up', 'down' and 'both'"),
])
def test_bad_parameters_raise_one_line(name, value, allowed):
    kwargs = {"n_streams": 4, name: value}
    with pytest.raises(ValueError, match=rf"^Invalid value for the '{name}' parameter\. Allowed "
                                         rf"values are {allowed}, but got {value!r} instead\.$"):
        PageHinkley(**kwargs)


def test_threshold_message_as_documented():
    with pytest.raises(ValueError) as info:
        PageHinkley(4, threshold=-1)
    assert str(info.value) == ("Invalid value for the 'threshold' parameter. Allowed values are "
                               "numbers > 0, but got -1 instead.")


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("bad, why", [
    (np.zeros(5), r"shape \(5,\)"),
    (np.zeros((4, 1)), r"shape \(4, 1\)"),
    (1.0, r"shape \(\)"),
    ([0.0, np.nan, 0.0, 0.0], "1 non-finite"),
    ([0.0, np.inf, -np.inf, 0.0], "2 non-finite"),
    (["a", "b", "c", "d"], "dtype <U1"),
    (np.zeros(4, dtype=complex), "dtype complex128"),
    ([0.0, [1.0, 2.0], 0.0, 0.0], "a list numpy cannot make an array of"),
])
def test_bad_input_is_refused_and_changes_nothing(bad, why):
    X = planted_streams(seed=2, n_streams=4, n_steps=300)
    ph, clean = PageHinkley(4, **PARAM_SETS["sensitive"]), PageHinkley(4, **PARAM_SETS["sensitive"])
    run(ph, X[:150])
    run(clean, X[:150])
    assert ph.drift_detected.any() or ph.n_detections.sum() > 0
    before = ph.state_dict()
    with pytest.raises(ValueError, match=r"^Invalid value for the 'x' parameter\. Allowed values "
                                         rf"are finite real numbers .*{why}.* instead\.$"):
        ph.update(bad)
    assert_same_state(ph.state_dict(), before)
    np.testing.assert_array_equal(run(ph, X[150:]), run(clean, X[150:]))


def test_bad_state_is_refused_and_changes_nothing():
    ph = PageHinkley(4)
    run(ph, planted_streams(seed=3, n_streams=4, n_steps=100))
    before = ph.state_dict()
    incomplete = {k: v for k, v in before.items() if k != "mean"}
    with pytest.raises(ValueError, match=r"^Invalid value for the 'state' parameter\..*'mean'"):
        ph.load_state_dict(incomplete)
    short = {**before, "sum_decrease": np.zeros(3)}
    with pytest.raises(ValueError, match=r"'sum_decrease' of shape \(3,\)"):
        ph.load_state_dict(short)
    bad_param = {**before, "alpha": 2.0}
    with pytest.raises(ValueError, match=r"^Invalid value for the 'alpha' parameter\."):
        ph.load_state_dict(bad_param)
    assert_same_state(ph.state_dict(), before)
