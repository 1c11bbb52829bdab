"""Decoder fuzzing: bad wire messages against a running encoder service.

Full size, against a service process over loopback TCP::

    python -m bench.fuzz --messages 100000 --seed 0

prints, per mutation class, how many bad messages went out and how they were refused, then the
total and the time taken, and exits 1 if the service died, left a message unanswered, answered
one with anything but an ``error`` that gives a reason, miscounted its errors, or scored valid
trials differently afterwards. tests/test_fuzz.py runs the same driver at a reduced size on a
service in a thread. It is a check, not a benchmark: ``python -m bench`` leaves it out. The
messages, and why each is certain to be refused, are in `bench.fuzz_messages`.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import subprocess
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np
import zmq

from encoders.client import EncoderClient, EncoderError, spawn_service
from encoders.encoding import PrequentialEncoder
from replay import wire

from .fuzz_messages import (DEFAULT_CLASSES, MUTATIONS, OPEN, RUN, WARMUP_TRIALS, Case, generate,
                            valid_trial)


# -- driver ------------------------------------------------------------------------------------

@dataclass
class Tally:
    """Bad messages of one class: sent, refused by the decoder or by the service; skipped."""

    sent: int = 0
    decoder: int = 0
    service: int = 0
    skipped: int = 0
    reasons: Counter = field(default_factory=Counter)


def reason_family(reason: str) -> str:
    """A reason with its (short) quoted values, numbers and long runs of one character blanked,
    to tally reasons by kind."""
    text = re.sub(r"(.)\1{5,}", r"\1...", reason)
    text = re.sub(r"'[^']{0,200}'|\"[^\"]{0,200}\"", "'*'", text)
    return re.sub(r"\d+", "N", text)[:70]


@dataclass
class Report:
    """What one fuzz run saw; ``ok`` when nothing failed."""

    tallies: dict[str, Tally]
    failures: list[str] = field(default_factory=list)
    n_failures: int = 0
    elapsed_s: float = 0.0
    errors_before: int = 0
    errors_after: int | None = None  # the 'errors' field of the last error reply
    valid_checked: int = 0  # valid requests answered as a local encoder would, before and after

    @property
    def n_bad(self) -> int:
        return sum(t.sent for t in self.tallies.values())

    @property
    def ok(self) -> bool:
        return self.n_failures == 0

    def fail(self, message: str) -> None:
        self.n_failures += 1
        if len(self.failures) < 20:
            self.failures.append(message)

    def table(self) -> str:
        rows = [("class", "sent", "decoder", "service", "skipped", "reasons", "most common reason")]
        for name, t in self.tallies.items():
            common = t.reasons.most_common(1)[0][0] if t.reasons else ""
            rows.append((name, t.sent, t.decoder, t.service, t.skipped, len(t.reasons), common))
        total = Tally()
        for t in self.tallies.values():
            total.sent, total.decoder = total.sent + t.sent, total.decoder + t.decoder
            total.service, total.skipped = total.service + t.service, total.skipped + t.skipped
            total.reasons.update(t.reasons)
        rows.append(("total", total.sent, total.decoder, total.service, total.skipped,
                     len(total.reasons), ""))
        widths = [max(len(str(r[i])) for r in rows) for i in range(6)]
        lines = ["  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                           for i, (c, w) in enumerate(zip(r[:6], widths))) + "  " + str(r[6])
                 for r in rows]
        rate = total.sent / self.elapsed_s if self.elapsed_s else 0.0
        lines += [f"{total.sent} bad messages in {self.elapsed_s:.1f} s ({rate:.0f}/s); "
                  f"errors counted by the service: {self.errors_before} -> {self.errors_after}; "
                  f"valid requests checked against a local encoder: {self.valid_checked}",
                  "OK" if self.ok else f"FAILED: {self.n_failures} failure(s)"]
        lines += [f"  {f}" for f in self.failures]
        return "\n".join(lines)


class _Mirror:
    """A local PrequentialEncoder fed the same valid trials as one run of the service."""

    def __init__(self, run: str):
        self.run, self.next_trial = run, 0
        self.encoder = PrequentialEncoder(OPEN["layers"], OPEN["n_voxels"], OPEN["n_units"],
                                          OPEN["lags"], OPEN["alphas"], OPEN["warmup"])

    def open(self, client) -> None:
        client.open(self.run, **OPEN)

    def trial(self, client, rng, report: Report, exact: bool) -> None:
        unit, features, frames = valid_trial(rng)
        got = client.trial(self.run, self.next_trial, unit, features, frames)
        want = self.encoder.step(self.next_trial, unit, features, frames)
        _compare(report, f"trial_r of {self.run!r} trial {self.next_trial}", got,
                 np.array([want[name] for name in OPEN["layers"]]), exact)
        self.next_trial += 1

    def finish(self, client, report: Report, exact: bool) -> None:
        got, enc = client.finish(self.run), self.encoder
        r, r2, alpha = enc.r(), enc.r2(), enc.alpha()
        layers = OPEN["layers"]
        want = {"r": np.stack([r[n] for n in layers]), "r2": np.stack([r2[n] for n in layers]),
                "alpha": np.stack([alpha[n] for n in layers]), "drift": enc.drift_events(),
                "unit_stats": enc.unit_stats()}
        for name, value in want.items():
            _compare(report, f"finish of {self.run!r}: {name}", got.get(name), value, exact)


def _compare(report: Report, what: str, got, want, exact: bool) -> None:
    report.valid_checked += 1
    same = got is not None and np.shape(got) == np.shape(want) and (
        np.array_equal(got, want, equal_nan=True) if exact
        else np.allclose(got, want, rtol=1e-9, atol=1e-12, equal_nan=True))
    if not same:
        report.fail(f"{what}: the service answered {np.asarray(got).tolist()!r:.200}, "
                    f"a local encoder {np.asarray(want).tolist()!r:.200}")


def _check_reply(report: Report, case: Case, reply: wire.Message, expected_errors: int) -> None:
    tally = report.tallies[case.mutation]
    reason = reply.header.get("reason")
    if reply.kind != "error" or not isinstance(reason, str) or not reason:
        report.fail(f"{case.mutation}: a {reply.kind!r} reply with reason {reason!r:.100} to "
                    f"{_describe(case)}")
        return
    if reply.header.get("errors") != expected_errors:
        report.fail(f"{case.mutation}: the error reply counts {reply.header.get('errors')!r:.40} "
                    f"errors, expected {expected_errors}, for {_describe(case)}")
    if case.decoder_reason is not None:
        tally.decoder += 1
        if not reason.startswith(case.decoder_reason[:60]):
            report.fail(f"{case.mutation}: the service says {reason!r:.100}, the decoder here "
                        f"{case.decoder_reason!r:.100}")
    else:
        tally.service += 1
    tally.reasons[reason_family(reason)] += 1


def _describe(case: Case) -> str:
    """The message's first frames, each cut to its head and tail."""
    def frame(f):
        f = bytes(f)
        return repr(f) if len(f) <= 90 else f"{f[:50]!r}...{f[-30:]!r} ({len(f)} bytes)"
    return "[" + ", ".join(frame(f) for f in case.frames[:4]) + \
        (", ...]" if len(case.frames) > 4 else "]")


def _send_bad(sock, cases, n_messages: int, report: Report, window: int) -> None:
    """Send ``n_messages`` bad cases with at most ``window`` unanswered; check each reply."""
    outstanding: deque[Case] = deque()
    expected = report.errors_before
    sent = 0

    def collect() -> bool:
        nonlocal expected
        case = outstanding.popleft()
        try:
            reply = wire.recv(sock)
        except zmq.Again:
            report.fail(f"no reply to a {case.mutation} message: {_describe(case)}")
            return False
        expected += 1
        _check_reply(report, case, reply, expected)
        report.errors_after = reply.header.get("errors")
        if wire.is_int(report.errors_after):  # one miscount is reported once, not at every reply
            expected = report.errors_after
        return True

    while sent < n_messages:
        case = next(cases)
        if not case.bad:
            report.tallies[case.mutation].skipped += 1
            continue
        if case.decoder_reason is not None and case.decoder_error != "ProtocolError":
            report.fail(f"{case.mutation}: decode raised {case.decoder_error} "
                        f"({case.decoder_reason!r:.100}), not ProtocolError, on {_describe(case)}")
        try:
            sock.send_multipart(case.frames)
        except zmq.Again:  # a DEALER without its peer blocks (the service is gone)
            report.fail(f"could not send a {case.mutation} message: the service takes no more")
            return
        report.tallies[case.mutation].sent += 1
        outstanding.append(case)
        sent += 1
        if len(outstanding) >= window and not collect():
            return
    while outstanding:
        if not collect():
            return


@contextlib.contextmanager
def _log_level(name: str, level: int):
    logger = logging.getLogger(name)
    saved = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(saved)


def fuzz(endpoint: str, n_messages: int = 5000, seed: int = 0, *, classes=DEFAULT_CLASSES,
         context: zmq.Context | None = None, window: int = 64, timeout_s: float = 10.0,
         alive: Callable[[], bool] | None = None, errors: Callable[[], int] | None = None,
         exact: bool = True) -> Report:
    """Send ``n_messages`` bad messages to the encoder service at ``endpoint`` and check it.

    RUN is opened and sent WARMUP_TRIALS valid trials first; then the bad messages go out over a
    DEALER socket, at most ``window`` unanswered, each to be answered by one ``error`` with a
    reason and the service's error count one higher; then RUN takes more valid trials and is
    finished, and a fresh run is served, each answer compared with a local PrequentialEncoder's
    (``exact``, or to 1e-9 for a service in another process, whose BLAS threads differ).

    ``alive`` tells whether the service still runs; ``errors`` reads its error count (a service
    in this process); without it the service must be fresh (no error before). Failures are
    collected in the returned `Report`, not raised.
    """
    report = Report({name: Tally() for name in classes})
    context = context or zmq.Context.instance()
    rng = np.random.default_rng([seed, 1])  # the valid trials, apart from the messages' stream
    client = EncoderClient(endpoint, timeout_s=timeout_s, context=context)
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.RCVTIMEO, int(timeout_s * 1000))
    sock.setsockopt(zmq.SNDTIMEO, int(timeout_s * 1000))
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        fuzzed = _Mirror(RUN)
        fuzzed.open(client)
        for _ in range(WARMUP_TRIALS):
            fuzzed.trial(client, rng, report, exact)
        report.errors_before = errors() if errors is not None else 0
        start = time.perf_counter()
        # The service logs every refusal; a run of this size would flood the log.
        with _log_level("cortexreplay.encoder", logging.CRITICAL):
            _send_bad(sock, generate(seed, classes, fuzzed.next_trial), n_messages, report, window)
        report.elapsed_s = time.perf_counter() - start
        if alive is not None and not alive():
            report.fail("the service is no longer running")
            return report
        if errors is not None and errors() != report.errors_before + report.n_bad:
            report.fail(f"the service counted {errors() - report.errors_before} errors for "
                        f"{report.n_bad} bad messages")
        if report.errors_after is not None and \
                report.errors_after != report.errors_before + report.n_bad:
            report.fail(f"the last error reply counts {report.errors_after} errors, expected "
                        f"{report.errors_before + report.n_bad}")
        # The fuzzed run carries on as if no bad message had come; a fresh run is served too.
        for _ in range(3):
            fuzzed.trial(client, rng, report, exact)
        fuzzed.finish(client, report, exact)
        fresh = _Mirror("fuzz-after")
        fresh.open(client)
        for _ in range(4):
            fresh.trial(client, rng, report, exact)
        fresh.finish(client, report, exact)
    except EncoderError as err:
        report.fail(f"a valid request failed: {err}"[:300])
    finally:
        sock.close()
        client.close()
    return report


# -- command line ------------------------------------------------------------------------------

@contextlib.contextmanager
def _stderr_to(path: str):
    """Point file descriptor 2 at ``path`` (a child started meanwhile inherits it)."""
    sys.stderr.flush()
    saved, target = os.dup(2), os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(target, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(target)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fuzz",
        description="Fuzz the encoder service's decoder with bad messages (a child process "
                    "over loopback TCP); exit 1 on any failure.")
    parser.add_argument("--messages", type=int, default=100_000, help="bad messages to send")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--window", type=int, default=64, help="unanswered messages at most")
    parser.add_argument("--bind", default="tcp://127.0.0.1:*", help="the service's endpoint")
    parser.add_argument("--classes", default=None,
                        help=f"comma-separated mutation classes (default: all); any of "
                             f"{', '.join(MUTATIONS)}")
    parser.add_argument("--service-log", default=os.devnull,
                        help="file for the service's log (default: discarded)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait per reply")
    args = parser.parse_args(argv)
    classes = list(DEFAULT_CLASSES) if args.classes is None else args.classes.split(",")
    unknown = [name for name in classes if name not in MUTATIONS]
    if unknown:
        parser.error(f"unknown mutation classes {unknown}")
    start = time.perf_counter()
    with _stderr_to(args.service_log):
        proc, endpoint = spawn_service(args.bind)
    context = zmq.Context()
    try:
        report = fuzz(endpoint, args.messages, args.seed, classes=classes, context=context,
                      window=args.window, timeout_s=args.timeout,
                      alive=lambda: proc.poll() is None, exact=False)
        if proc.poll() is None:
            client = EncoderClient(endpoint, timeout_s=args.timeout, context=context)
            try:
                client.shutdown()
            except EncoderError as err:
                report.fail(f"shutdown failed: {err}")
            finally:
                client.close()
            try:
                if proc.wait(timeout=20) != 0:
                    report.fail(f"the service exited with status {proc.returncode}")
            except subprocess.TimeoutExpired:  # killed below
                report.fail("the service did not stop after shutdown")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        context.destroy(linger=0)
    print(report.table())
    print(f"elapsed {time.perf_counter() - start:.1f} s in all (service start and valid checks "
          f"included); seed {args.seed}, classes {len(classes)}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
