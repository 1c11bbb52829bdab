"""`cortexreplay fake-scanner STORE --connect ENDPOINT`: stream a stored session as a live acquisition."""
import zmq

from replay.scanner import Faults, stream_session
from replay.store import open_recording


def add_parser(sub):
    p = sub.add_parser("fake-scanner", help="send a stored session as a live acquisition "
                                            "(to rehearse or test 'live')")
    p.add_argument("store", help="recording store")
    p.add_argument("--connect", required=True, metavar="ENDPOINT",
                   help="where the live source listens, e.g. tcp://127.0.0.1:5600")
    p.add_argument("--subject", default=None, help="subject (default: the store's first)")
    p.add_argument("--session", default="0")
    p.add_argument("--speed", type=float, default=1.0,
                   help="real time times this (default 1; 0: as fast as the socket takes it)")
    p.add_argument("--jitter", type=float, default=0.0, metavar="SECONDS",
                   help="move each timestamp uniformly within +- this")
    p.add_argument("--drop", type=float, default=0.0, metavar="P", help="lose each frame with P")
    p.add_argument("--duplicate", type=float, default=0.0, metavar="P",
                   help="send each frame twice with P")
    p.add_argument("--seed", type=int, default=0, help="seed of the injected faults")
    p.set_defaults(func=main)


def main(args):
    faults = Faults(args.jitter, args.drop, args.duplicate, args.seed)  # checked before sending
    recording = open_recording(args.store)
    subject = args.subject or recording.subjects[0]
    context = zmq.Context.instance()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 5000)  # what is queued still goes out after the last send
    push.connect(args.connect)
    try:
        sent = stream_session(push, recording, subject, args.session, speed=args.speed or None,
                              faults=faults)
    finally:
        push.close()
    print(f"fake-scanner: sent {sent.frames} frames ({sent.dropped} dropped, {sent.duplicated} "
          f"sent twice) and {sent.events} events of {subject} session {args.session}")
