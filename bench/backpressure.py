"""Backpressure: a producer far faster than the encoder is slowed to its pace, and loses nothing.

A producer (``EncoderClient.submit``, its default window of trials in flight) generates and sends
10 000 trials of a small fUS-like shape to a real encoder service process (``spawn_service``).
Each trial's frames are made from its features by a fixed FIR cortex plus noise, and are fresh
arrays: the producer keeps no pool of them. Measured, in the same run:

- rates: the producer alone (generate + encode + send over loopback TCP to a PULL socket in a
  thread that discards them, in a process of its own) against the consumer (trials scored per
  second during the run, when the producer waits on it);
- nothing lost: every trial's reply, in order; the service's ``status`` (trials, duplicates,
  errors); ``finish``'s trial count; and the scored frames each unit's sums hold (``unit_stats``
  row ``n``), all checked exactly;
- memory bounded: the resident high-water mark (``VmHWM``) of the producer and of the service,
  sampled during the run at trial 1 000 and at the last trial, and their ratio;
- the time the producer spent blocked waiting for credit (a free slot in the window), and how
  many of its waits found no reply ready.

The producer and the rate measurement run in fresh interpreters (``python -m bench.backpressure
--child ...``), so that their high-water marks are their own and not the benchmark runner's.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import zmq
from threadpoolctl import threadpool_limits

from encoders.client import EncoderClient, spawn_service
from encoders.lags import lagged
from replay import wire

from .timing import best_time

TRIALS = 10_000
SAMPLE_AT = 1_000            # the early high-water mark the last one is compared with
BOUNDED_RATIO = 1.1          # the last peak within this factor of the one at SAMPLE_AT
RATE_TARGET = 10.0           # the producer at least this many times faster than the consumer
RATE_TRIALS = 2_000          # trials the producer's unthrottled rate is timed on,
RATE_BLOCKS = 5              # in this many blocks (the fastest counts)


@dataclass(frozen=True)
class Shape:
    """One trial's sizes and the run's encoder settings."""
    frames: int = 20
    layers: int = 2
    features: int = 64
    voxels: int = 2_000
    lags: tuple = (0, 1, 2, 3, 4, 5)   # the encoder's FIR lags (frames at 1 Hz)
    cortex_lags: tuple = (1, 2, 3)     # the synthetic cortex's true delays
    alphas: tuple = (1.0, 10.0, 100.0, 1000.0, 10000.0)
    warmup: int = 10
    units: int = 40           # sounds; trial t is unit t % units
    seed: int = 0

    @property
    def names(self) -> list[str]:
        return [f"layer{i}" for i in range(self.layers)]

    @property
    def trial_bytes(self) -> int:
        """Payload bytes of one trial message (frames and every layer's features, float32)."""
        return 4 * self.frames * (self.voxels + self.layers * self.features)

    def open_fields(self) -> dict:
        return {"layers": self.names, "n_voxels": self.voxels, "n_units": self.units,
                "lags": list(self.lags), "alphas": list(self.alphas), "warmup": self.warmup}


class Generator:
    """Trial ``t`` of a synthetic cortex: fresh features, and frames that a FIR map of layer 0's
    features (delays ``cortex_lags``) explains plus noise. Deterministic in (seed, t), so a test
    can make it again."""

    def __init__(self, shape: Shape):
        self.shape = shape
        rng = np.random.default_rng(shape.seed)
        p = shape.features * len(shape.cortex_lags)
        self.W = (rng.standard_normal((p, shape.voxels), dtype=np.float32) / np.sqrt(p))

    def __call__(self, t: int) -> tuple[int, dict, np.ndarray]:
        s = self.shape
        rng = np.random.default_rng((s.seed, t))
        features = {name: rng.standard_normal((s.frames, s.features), dtype=np.float32)
                    for name in s.names}
        frames = lagged(features[s.names[0]], s.cortex_lags) @ self.W
        frames += rng.standard_normal(frames.shape, dtype=np.float32)
        return t % s.units, features, frames


class TimedClient(EncoderClient):
    """An EncoderClient that counts its waits for replies: their time, and how many found no
    reply ready on the socket (the producer stalled on the consumer)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.waited_s, self.waits, self.stalls = 0.0, 0, 0

    def wait(self, seq: int) -> wire.Message:
        t0 = time.perf_counter()
        if seq not in self._replies and not self.socket.poll(0, zmq.POLLIN):
            self.stalls += 1
        try:
            return super().wait(seq)
        finally:
            self.waits += 1
            self.waited_s += time.perf_counter() - t0


def _hwm_mb(pid: int | str = "self") -> float | None:
    """Resident high-water mark of process ``pid`` in MB (None where /proc cannot tell)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    if pid == "self":  # ru_maxrss: kB on Linux, bytes on macOS
        scale = 1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale
    return None


def expected_n(shape: Shape, n_trials: int) -> np.ndarray:
    """Scored frames each unit's sums must hold after ``n_trials``: (units,)."""
    scored = np.arange(shape.warmup, n_trials)
    per_unit = np.bincount(scored % shape.units, minlength=shape.units)
    return per_unit.astype(np.float64) * shape.frames


@dataclass
class Outcome:
    """What one producer run saw; ``lost`` and ``ok`` sum it up."""
    trials: int
    window: int
    sent: int = 0
    replies: int = 0
    in_order: bool = True
    non_finite_scores: int = 0
    status: dict = field(default_factory=dict)
    finished_trials: int = -1
    dropped_frames: int = -1
    unit_n_exact: bool = False
    max_in_flight: int = 0
    wall_s: float = 0.0
    blocked_s: float = 0.0
    waits: int = 0
    stalls: int = 0
    peaks: dict = field(default_factory=dict)   # trial -> {"producer": MB, "service": MB}

    @property
    def lost(self) -> int:
        return self.sent - self.replies

    @property
    def ok(self) -> bool:
        return (self.sent == self.replies == self.trials and self.in_order
                and self.status.get("trials") == self.trials
                and self.status.get("duplicates") == 0 and self.status.get("errors") == 0
                and self.finished_trials == self.trials and self.dropped_frames == 0
                and self.unit_n_exact and self.max_in_flight <= self.window)


def produce(client: TimedClient, shape: Shape, n_trials: int, run: str = "backpressure",
            service_pid: int | None = None, sample_at=(), on_reply=None) -> Outcome:
    """Open a run, submit ``n_trials`` as fast as the window lets, drain, check, finish.

    ``on_reply(trial, trial_r)`` sees every reply; ``sample_at`` are the trial counts after
    which the high-water marks of this process and of ``service_pid`` are read.
    """
    make = Generator(shape)
    out = Outcome(trials=n_trials, window=client.window)
    sample_at = set(sample_at)

    def take(replies):
        for trial, trial_r in replies:
            out.in_order &= trial == out.replies
            if trial >= shape.warmup:
                out.non_finite_scores += int(not np.isfinite(trial_r).all())
            out.replies += 1
            if on_reply is not None:
                on_reply(trial, trial_r)

    def sample(key):
        out.peaks[key] = {"producer": _hwm_mb(), "service":
                          _hwm_mb(service_pid) if service_pid is not None else None}

    client.open(run, **shape.open_fields())
    sample(0)
    waited0, waits0, stalls0 = client.waited_s, client.waits, client.stalls
    t0 = time.perf_counter()
    for t in range(n_trials):
        unit, features, frames = make(t)
        take(client.submit(run, t, unit, features, frames))
        out.sent += 1
        if out.sent in sample_at:
            sample(out.sent)
    out.blocked_s = client.waited_s - waited0
    out.waits, out.stalls = client.waits - waits0, client.stalls - stalls0
    take(client.drain())
    out.wall_s = time.perf_counter() - t0
    sample(n_trials)
    out.status = client.status()
    final = client.finish(run)
    out.finished_trials, out.dropped_frames = final["trials"], final["dropped_frames"]
    n = final["unit_stats"][:, :, 0, :]                   # (layers, units, voxels)
    out.unit_n_exact = bool(np.array_equal(n, np.broadcast_to(
        expected_n(shape, n_trials)[None, :, None], n.shape)))
    out.max_in_flight = client.max_in_flight
    return out


def child_run(n_trials: int) -> dict:
    """The producer process: a service child of its own, ``n_trials`` through the window."""
    shape = Shape()
    proc, endpoint = spawn_service()
    context = zmq.Context()
    client = TimedClient(endpoint, context=context)
    try:
        service_idle = _hwm_mb(proc.pid)
        out = produce(client, shape, n_trials, service_pid=proc.pid,
                      sample_at=(100, SAMPLE_AT, n_trials // 2))
        client.shutdown()
        proc.wait(30)
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        context.term()
    return {"shape": asdict(shape), "trial_bytes": shape.trial_bytes, "service_idle_mb":
            service_idle, **asdict(out), "lost": out.lost, "ok": out.ok,
            "peaks": {str(k): v for k, v in sorted(out.peaks.items())}}


def child_rate(n_trials: int) -> dict:
    """The producer alone: generate, encode and send trials over loopback TCP to a PULL socket
    in a thread that discards them (high-water marks of 4 at both ends: no hidden buffering).
    ``n_trials`` in ``RATE_BLOCKS`` blocks, each timed until the sink has the block's last
    trial; the fastest block counts (the least disturbed by other work on the cores, as
    bench.timing's best-of-repeats)."""
    shape = Shape()
    make = Generator(shape)
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, 4)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 4)
    push.connect(f"tcp://127.0.0.1:{port}")
    block = max(1, n_trials // RATE_BLOCKS)
    warm = 100
    total = warm + block * RATE_BLOCKS
    got = {"n": 0}

    def sink():
        while got["n"] < total:
            pull.recv_multipart(copy=False)
            got["n"] += 1

    def send(t):
        unit, features, frames = make(t)
        wire.send(push, "trial", {"run": "rate", "trial": t, "unit": unit},
                  {"frames": frames, **{f"features/{k}": v for k, v in features.items()}}, seq=t)

    def until_received(n):
        while got["n"] < n:
            time.sleep(1e-4)

    thread = threading.Thread(target=sink, daemon=True)
    thread.start()
    for t in range(warm):  # warm-up: allocator, connection
        send(t)
    until_received(warm)
    blocks = []
    for k in range(RATE_BLOCKS):
        start = warm + k * block
        t0 = time.perf_counter()
        for t in range(start, start + block):
            send(t)
        until_received(start + block)
        blocks.append(time.perf_counter() - t0)
    thread.join(60)
    gen = best_time(lambda: make(0), repeats=50)
    push.close(linger=0)
    pull.close(linger=0)
    context.term()
    return {"trials": block * RATE_BLOCKS, "block": block, "blocks_s": blocks,
            "rate": block / min(blocks), "median_rate": block / float(np.median(blocks)),
            "generate_rate": 1.0 / gen}


CHILDREN = {"run": child_run, "rate": child_rate}


def _child(kind: str, n: int) -> dict:
    cmd = [sys.executable, "-m", "bench.backpressure", "--child", kind, "--trials", str(n)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"backpressure {kind} ({n} trials) failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(trials: int = TRIALS, log=print) -> dict:
    log(f"backpressure: producer alone, {RATE_TRIALS} trials in {RATE_BLOCKS} blocks")
    rate = _child("rate", RATE_TRIALS)
    log(f"backpressure: producer and encoder service, {trials} trials")
    res = _child("run", trials)
    consumer = res["trials"] / res["wall_s"]
    peaks = res["peaks"]
    early = peaks[str(min(SAMPLE_AT, trials))]
    last = peaks[str(trials)]
    ratios = {who: (last[who] / early[who] if last[who] and early[who] else None)
              for who in ("producer", "service")}
    return {"bench": "backpressure", **res, "producer_rate": rate["rate"],
            "producer_generate_rate": rate["generate_rate"], "rate_trials": rate["trials"],
            "rate_block": rate["block"], "producer_median_rate": rate["median_rate"],
            "consumer_rate": consumer, "rate_ratio": rate["rate"] / consumer,
            "sample_at": min(SAMPLE_AT, trials), "peak_ratio": ratios,
            "blocked_fraction": res["blocked_s"] / res["wall_s"],
            "unbounded_bytes": trials * res["trial_bytes"]}


def targets(r: dict) -> dict:
    """The target's parts, each met or not."""
    bounded = all(v is not None and v <= BOUNDED_RATIO for v in r["peak_ratio"].values())
    return {"faster": r["rate_ratio"] >= RATE_TARGET, "nothing_lost": bool(r["ok"]),
            "bounded": bounded, "window": r["max_in_flight"] <= r["window"]}


def _mb(x) -> str:
    return "n/a" if x is None else f"{x:,.0f} MB"


def markdown(r: dict) -> str:
    s, m = r["shape"], r.get("machine", {})
    peaks = r["peaks"]
    at = str(r["sample_at"])
    last = str(r["trials"])
    met = targets(r)
    verdict = "met" if all(met.values()) else "**missed** (" + ", ".join(
        k for k, v in met.items() if not v) + ")"
    st = r["status"]
    rows = ["| trial | producer peak | service peak |", "|---|---|---|"]
    for key, v in peaks.items():
        label = "after open" if key == "0" else f"{int(key):,}"
        rows.append(f"| {label} | {_mb(v['producer'])} | {_mb(v['service'])} |")
    pr = r["peak_ratio"]
    grew = [f"{who} {peaks[last][who] - peaks[at][who]:+.1f} MB" for who in ("producer", "service")
            if peaks[last][who] is not None and peaks[at][who] is not None]
    growth = (f" (between them: {', '.join(grew)}, against "
              f"{(r['trials'] - int(at)) * r['trial_bytes'] / 1e6:,.0f} MB for the trials sent "
              "in between)") if grew and int(last) > int(at) else ""
    lines = [
        "## Backpressure: a producer 10x faster than the encoder\n",
        f"{r['trials']:,} trials of {s['frames']} frames, {s['layers']} layers of "
        f"{s['features']} features and {s['voxels']:,} voxels, float32 "
        f"({r['trial_bytes'] / 1e3:.0f} kB of payload a trial), sent by one `EncoderClient` "
        f"(`submit`, window {r['window']}) to an encoder service process (`spawn_service`, one "
        f"thread; lags {s['lags'][0]}..{s['lags'][-1]}, {len(s['alphas'])} penalties, warm-up "
        f"{s['warmup']}, {s['units']} units). The producer makes every trial afresh (features, "
        "and frames from a FIR map of layer 0 plus noise)"
        + (f"; {m['processor']} ({m['cores']} cores), Python {m['python']}." if m else ".") + "\n",
        "| | trials/s |", "|---|---|",
        f"| producer alone (generate + encode + send to a discarding PULL; fastest of "
        f"{r['rate_trials'] // r['rate_block']} blocks of {r['rate_block']:,} trials, median "
        f"{r['producer_median_rate']:,.0f}) | {r['producer_rate']:,.0f} |",
        f"| producer, generating alone | {r['producer_generate_rate']:,.0f} |",
        f"| consumer (encoder service, during the run) | {r['consumer_rate']:,.0f} |",
        f"| ratio | {r['rate_ratio']:.1f}x |", "",
        f"Sent {r['sent']:,}, replies {r['replies']:,} (in order: {r['in_order']}), lost "
        f"{r['lost']}. The service's `status`: {st.get('trials'):,} trials, "
        f"{st.get('duplicates')} duplicates, {st.get('errors')} errors; `finish`: "
        f"{r['finished_trials']:,} trials, {r['dropped_frames']} dropped frames; every unit's "
        f"scored-frame count (`unit_stats` row n) equals ({r['trials']:,} - {s['warmup']}) trials "
        f"x {s['frames']} frames as assigned to units, exactly: {r['unit_n_exact']}.\n",
        "Resident high-water marks (VmHWM) sampled during the run; the service's mark when idle "
        f"after start-up was {_mb(r['service_idle_mb'])}:\n",
        *rows, "",
        f"Peak at trial {int(last):,} over peak at trial {int(at):,}: producer "
        + (f"{pr['producer']:.3f}x" if pr["producer"] else "n/a") + ", service "
        + (f"{pr['service']:.3f}x" if pr["service"] else "n/a") + growth
        + f". An unbounded producer would have held {r['unbounded_bytes'] / 1e9:.2f} GB "
        f"({r['trials']:,} trials x {r['trial_bytes'] / 1e3:.0f} kB) by the end. At most "
        f"{r['max_in_flight']} trials were in flight (window {r['window']}); the producer spent "
        f"{r['blocked_s']:.1f} s of {r['wall_s']:.1f} s ({100 * r['blocked_fraction']:.0f}%) "
        f"blocked waiting for a free slot, and {r['stalls']:,} of its {r['waits']:,} waits "
        "found no reply ready.\n",
        f"Target: a 10x faster producer over {TRIALS:,} trials keeps memory bounded (last peak "
        f"within {BOUNDED_RATIO}x of the peak at trial {SAMPLE_AT:,}) and loses nothing: "
        + (verdict if r["trials"] >= TRIALS else f"{verdict} at {r['trials']:,} trials only "
           "(not the full size)") + ".\n",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.backpressure")
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--save", action="store_true",
                        help="also write bench/results/backpressure.json (as `python -m bench` "
                             "does, so that `python -m bench --render` can use it)")
    parser.add_argument("--child", choices=sorted(CHILDREN), default=None)
    args = parser.parse_args(argv)
    if args.child is not None:
        # One BLAS thread, like the service: the two processes share the cores, and a BLAS pool
        # spinning beside a busy service slowed the producer's own work 3x.
        with threadpool_limits(limits=1, user_api="blas"):
            answer = CHILDREN[args.child](args.trials or TRIALS)
        print(json.dumps(answer))
        return 0
    result = run(args.trials or TRIALS)
    result["machine"] = {"platform": platform.platform(), "python": platform.python_version(),
                         "processor": platform.processor() or platform.machine(),
                         "cores": os.cpu_count()}
    if args.save:
        out = Path("bench/results")
        out.mkdir(parents=True, exist_ok=True)
        (out / "backpressure.json").write_text(json.dumps(result, indent=2))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
