"""`cortexreplay fake-scanner STORE --connect ENDPOINT | --lsl NAME`: stream a stored session as a
live acquisition, over ZeroMQ or the Lab Streaming Layer."""
import zmq

from replay.lsl import markers_name
from replay.scanner import Faults, stream_session, stream_session_lsl
from replay.store import open_recording


def add_parser(sub):
    p = sub.add_parser("fake-scanner", help="send a stored session as a live acquisition "
                                            "(to rehearse or test 'live')")
    p.add_argument("store", help="recording store")
    to = p.add_mutually_exclusive_group(required=True)
    to.add_argument("--connect", metavar="ENDPOINT",
                    help="ZeroMQ: where the live source listens, e.g. tcp://127.0.0.1:5600")
    to.add_argument("--lsl", metavar="NAME",
                    help="LSL: publish the streams NAME (frames) and NAME-markers, on this "
                         "machine unless LSLAPICFG says otherwise")
    p.add_argument("--wait", type=float, default=30.0, metavar="SECONDS",
                   help="with --lsl: how long to wait for a live source (default 30)")
    p.add_argument("--subject", default=None, help="subject (default: the store's first)")
    p.add_argument("--session", default="0")
    p.add_argument("--speed", type=float, default=1.0,
                   help="real time times this (default 1; 0: as fast as the source takes it)")
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
    speed = args.speed or None
    if args.lsl is not None:
        sent = stream_session_lsl(recording, subject, args.session, speed, faults,
                                  name=args.lsl, wait_s=args.wait)
        where = f"over LSL as {args.lsl!r} and {markers_name(args.lsl)!r}"
    else:
        push = zmq.Context.instance().socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 5000)  # what is queued still goes out after the last send
        try:
            push.connect(args.connect)
        except zmq.ZMQError as err:
            push.close()
            raise ValueError(f"cannot connect to {args.connect!r}: {err.strerror}; give an "
                             "endpoint like tcp://127.0.0.1:5600") from None
        try:
            sent = stream_session(push, recording, subject, args.session, speed, faults)
        finally:
            push.close()
        where = f"to {args.connect}"
    print(f"fake-scanner: sent {sent.frames} frames ({sent.dropped} dropped, {sent.duplicated} "
          f"sent twice) and {sent.events} events of {subject} session {args.session} {where}")
