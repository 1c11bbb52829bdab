"""`cortexreplay monitor ENDPOINT`: follow an encoder service's progress, and say what was missed."""
import zmq

from encoders.monitor import Monitor


def add_parser(sub):
    p = sub.add_parser("monitor", help="follow the trials an encoder service scores")
    p.add_argument("endpoint", help="the service's monitor endpoint (encoder serve --monitor)")
    p.add_argument("--count", type=int, default=0, help="stop after this many trials (0: never)")
    p.add_argument("--timeout", type=float, default=0.0,
                   help="stop after this many seconds without a message (0: wait forever)")
    p.set_defaults(func=main)


def main(args):
    monitor = Monitor(args.endpoint, timeout_s=args.timeout or None)
    trials = 0
    try:
        while not args.count or trials < args.count:
            try:
                msg = monitor.recv()
            except zmq.Again:
                break
            if msg.kind == "hello":
                runs = ", ".join(f"{run} at trial {t}" for run, t in monitor.runs.items())
                print(f"monitor: joined; open runs: {runs or 'none'}", flush=True)
                continue
            trials += 1
            r = " ".join(f"{v:.3f}" for v in msg.arrays["trial_r"])
            dropped = msg.header.get("dropped_frames", 0)
            print(f"{msg.header['run']} trial {msg.header['trial']}: r {r}"
                  + (f", {dropped} frame(s) dropped" if dropped else ""), flush=True)
    finally:
        # Monitoring may drop; this says how much, never hides it.
        print(f"monitor: {monitor.received} message(s) received, {monitor.missed} missed",
              flush=True)
        monitor.close()
