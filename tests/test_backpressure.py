"""A reduced bench/backpressure.py: a producer faster than the encoder loses nothing and is held
to the client's window (counts and bounds only; no speed is asserted)."""
import threading

import numpy as np
import pytest
import zmq
from threadpoolctl import threadpool_limits

from bench.backpressure import Generator, Shape, TimedClient, expected_n, produce
from encoders.encoding import PrequentialEncoder
from encoders.service import EncoderService

pytestmark = pytest.mark.timeout(60)

SHAPE = Shape(frames=10, layers=2, features=8, voxels=300, lags=(0, 1, 2, 3), cortex_lags=(1, 2),
              alphas=(1.0, 100.0, 10000.0), warmup=5, units=10, seed=3)
TRIALS = 500


def test_a_fast_producer_is_held_to_the_window_and_loses_nothing():
    context = zmq.Context()
    service = EncoderService("inproc://backpressure", context=context)
    thread = threading.Thread(target=service.serve_forever, daemon=True)
    thread.start()
    client = TimedClient(service.endpoint, timeout_s=10.0, context=context)
    try:
        # What the service must answer, trial by trial: the same trials through a local encoder,
        # under the service's thread limits.
        make = Generator(SHAPE)
        local = PrequentialEncoder(SHAPE.names, SHAPE.voxels, SHAPE.units, SHAPE.lags,
                                   SHAPE.alphas, SHAPE.warmup)
        with threadpool_limits(limits=1, user_api="blas"):
            expected = []
            for t in range(TRIALS):
                unit, features, frames = make(t)
                scores = local.step(t, unit, features, frames)
                expected.append(np.array([scores[name] for name in SHAPE.names]))
        got = []
        out = produce(client, SHAPE, TRIALS, on_reply=lambda t, r: got.append((t, r)))
        client.shutdown()
    finally:
        client.close()
        thread.join(10)
        context.destroy(linger=0)

    # Nothing lost: every reply, in order, and the service's counts agree.
    assert out.sent == out.replies == len(got) == TRIALS and out.lost == 0
    assert [t for t, _ in got] == list(range(TRIALS)) and out.in_order
    assert out.status["trials"] == TRIALS
    assert out.status["duplicates"] == 0 and out.status["errors"] == 0
    assert out.finished_trials == TRIALS and out.dropped_frames == 0
    assert out.unit_n_exact and out.non_finite_scores == 0 and out.ok
    assert expected_n(SHAPE, TRIALS).sum() == (TRIALS - SHAPE.warmup) * SHAPE.frames
    np.testing.assert_array_equal(local.unit_stats()[:, :, 0, :].sum(1),
                                  (TRIALS - SHAPE.warmup) * SHAPE.frames)
    for t, r in got:  # each reply is the local encoder's score of that trial, exactly
        np.testing.assert_array_equal(r, expected[t], err_msg=f"trial {t}")

    # Bounded: never more than the window in flight, and it was reached.
    assert out.max_in_flight == client.window == 4
    # Held back: every trial past the window waited for a reply, and the producer, being the
    # faster, mostly found none ready yet (it was blocked, not buffering).
    assert out.waits == TRIALS - client.window
    assert out.stalls >= out.waits // 2 and out.blocked_s > 0
    assert set(out.peaks) == {0, TRIALS} and out.peaks[0]["service"] is None
