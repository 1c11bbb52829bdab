"""Decoder fuzzing (bench/fuzz.py) at a reduced size: bad messages against a real service.

The full-size run is ``python -m bench.fuzz --messages 100000 --seed 0`` (a child process).
"""
import itertools

import numpy as np
import pytest

from bench import fuzz, fuzz_messages
from replay import wire

import test_service

pytestmark = pytest.mark.timeout(120)

_names = itertools.count()


class Served(test_service.Served):
    """The service tests' in-thread EncoderService, with a fuzzer aimed at it."""

    def fuzz(self, n_messages, seed=0, **options):
        return fuzz.fuzz(self.service.endpoint, n_messages, seed, context=self.context,
                         alive=self.thread.is_alive, errors=lambda: self.service.errors, **options)
        self.context.destroy(linger=0)


@pytest.fixture
def served():
    s = Served(f"inproc://fuzz-{next(_names)}")
    yield s
    s.stop()


def test_fuzz_inproc_every_bad_message_is_refused_and_counted(served):
    report = served.fuzz(5000, seed=0)
    assert report.ok, report.table()
    assert report.n_bad == 5000 and served.service.errors == 5000
    assert report.errors_after == 5000  # the 'errors' field of the last error reply
    assert served.thread.is_alive()
    assert all(report.tallies[name].sent > 0 for name in fuzz_messages.DEFAULT_CLASSES)
    # Decoder refusals and service refusals both took part; wire mutations that still decoded
    # (and so were not sent) are few.
    total = [sum(getattr(t, k) for t in report.tallies.values()) for k in ("decoder", "service")]
    assert min(total) > 1000 and sum(total) == 5000
    assert sum(t.skipped for t in report.tallies.values()) < 50
    assert report.valid_checked > 10  # trial_r and final results equal a local encoder's


def test_fuzz_over_loopback_tcp():
    s = Served("tcp://127.0.0.1:*")
    try:
        report = s.fuzz(1000, seed=1)
        assert report.ok, report.table()
        assert report.n_bad == 1000 and s.service.errors == 1000 and s.thread.is_alive()
    finally:
        s.stop()


@pytest.mark.parametrize("name", list(fuzz_messages.MUTATIONS))
def test_each_mutation_class_alone_is_refused_with_a_reason(served, name):
    report = served.fuzz(30, seed=2, classes=[name], timeout_s=2.0)
    assert report.ok, report.table()
    tally = report.tallies[name]
    assert tally.sent == 30 and served.service.errors == 30
    assert all(reason.strip() for reason in tally.reasons)
    # A wire class is refused by the decoder; a service class decodes and is refused by the
    # service's own checks (so it does test them).
    refused_by = "service" if fuzz_messages.MUTATIONS[name].service else "decoder"
    assert getattr(tally, refused_by) == 30, report.table()


@pytest.mark.parametrize("name", [n for n, m in fuzz_messages.MUTATIONS.items() if not m.service])
def test_decoder_refuses_wire_mutations_with_a_reply_sized_protocol_error(name):
    cases = itertools.islice(fuzz_messages.generate(3, [name]), 300)
    refused = 0
    for case in cases:
        try:
            wire.decode(case.frames)
        except wire.ProtocolError as err:
            refused += 1
            assert str(err) == case.decoder_reason and str(err).strip()
            # The service sends the reason back: it must fit in a header whatever was received.
            wire.encode("error", {"reason": str(err), "errors": 1})
        else:
            assert case.decoder_reason is None and not case.bad
    assert refused >= (250 if name == "header.bitflip" else 300)


def test_generation_is_seeded():
    def frames(seed):
        return [[bytes(f) for f in c.frames] for c in itertools.islice(fuzz_messages.generate(seed), 300)]
    assert frames(5) == frames(5)
    assert frames(5) != frames(6)


@pytest.mark.parametrize("shape", [[0, 2**62, 2**62], [0, 2**63], [2**62, 0, 2**62]])
def test_decoder_refuses_an_empty_array_too_large_for_numpy(shape):
    frames = fuzz_messages._with_header(fuzz_messages._encode("trial", arrays={"frames": np.zeros(0, np.float32)}),
                               {"v": 1, "kind": "trial", "seq": 0, "ts": 0.0,
                                "arrays": [{"name": "frames", "dtype": "float32", "shape": shape}]})
    with pytest.raises(wire.ProtocolError, match=r"shape of array 'frames' must fit numpy's index "
                                                 r"type .* but got \[.*\]"):
        wire.decode(frames)


def test_decoder_names_a_size_past_python_digit_limit():
    frames = fuzz_messages._with_header(fuzz_messages._encode("trial", arrays={"frames": np.zeros(1, np.float32)}),
                               {"v": 1, "kind": "trial", "seq": 0, "ts": 0.0,
                                "arrays": [{"name": "frames", "dtype": "float32",
                                            "shape": [10**4000, 10**4000]}]})
    with pytest.raises(wire.ProtocolError, match=r"'frames' declares at least 2\*\*26577 bytes but "
                                                 r"its frame has 4"):
        wire.decode(frames)


def test_full_size_command_at_a_small_size(capsys):
    """``python -m bench.fuzz`` with a child service process over loopback TCP."""
    assert fuzz.main(["--messages", "400", "--seed", "4"]) == 0
    out = capsys.readouterr().out
    assert "400 bad messages in" in out and "\nOK\n" in out
    assert all(f"\n{name} " in out for name in fuzz_messages.DEFAULT_CLASSES)
