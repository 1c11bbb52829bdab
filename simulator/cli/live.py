"""`cortexreplay live SCENARIO --listen ENDPOINT | --lsl NAME`: run a scenario variant on a live
acquisition, over ZeroMQ or the Lab Streaming Layer."""
from replay.live import ZmqSource
from replay.lsl import LslSource, markers_name
from replay.security import add_server_curve_arguments, server_curve
from replay.store import open_recording

from ..live import LiveOptions, live_spec, prepare_live, run_prepared
from ..scenario import load_scenario


def add_parser(sub):
    p = sub.add_parser("live", help="run a scenario variant on a live acquisition, in real time")
    p.add_argument("scenario", help="scenario TOML file")
    p.add_argument("--variant", default=None, help="the variant to run (needed if it has several)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--listen", metavar="ENDPOINT",
                        help="ZeroMQ: where the acquisition connects its PUSH socket, e.g. "
                             "tcp://127.0.0.1:5600 (docs/protocol.md, 'Acquisition')")
    source.add_argument("--lsl", metavar="NAME",
                        help="LSL: read the frames stream NAME and the markers stream "
                             "NAME-markers (docs/protocol.md, 'Acquisition over LSL')")
    p.add_argument("--lsl-markers", metavar="NAME", default=None,
                   help="with --lsl: the markers stream's name, if not NAME-markers")
    p.add_argument("--resolve-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="with --lsl: how long to look for the streams (default 60)")
    p.add_argument("--stimuli", metavar="STORE", default=None,
                   help="recording store holding the sounds the events name (default: the "
                        "scenario's data.store)")
    p.add_argument("--results", required=True, help="results store to write the run to")
    p.add_argument("--subject", default="live",
                   help="name the run is stored under (default 'live'; e.g. the animal and date)")
    p.add_argument("--seed", type=int, default=None, help="learner seed (default: the variant's first)")
    p.add_argument("--max-backlog", type=int, default=LiveOptions.max_backlog, metavar="N",
                   help="skip a trial's update when more than N trials wait behind it "
                        f"(default {LiveOptions.max_backlog}; none is ever dropped)")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="end the session after this long without a message (default: wait for "
                        "the stream's 'end', or Ctrl-C)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a scenario key, e.g. --set learning.lr=1e-3 (repeatable)")
    p.add_argument("--encoder", metavar="ENDPOINT", default=None,
                   help="use the encoder service at ENDPOINT instead of starting one")
    p.add_argument("--force", action="store_true", help="replace a finished run of the same name")
    add_server_curve_arguments(p, "the live source")
    p.set_defaults(func=main)


def main(args):
    scenario = load_scenario(args.scenario, args.sets)
    options = LiveOptions(args.max_backlog, args.subject, args.seed, args.force)
    spec = live_spec(scenario, args.variant, options)
    cfg = spec.config
    stimuli = args.stimuli or cfg["data"]["store"]
    if not stimuli:
        raise ValueError("no stimuli: pass --stimuli STORE or set data.store in the scenario")
    if args.lsl is not None and args.curve_secret is not None:
        raise ValueError("--curve-secret is for --listen; LSL has no keys (keep it on a trusted "
                         "network, docs/protocol.md)")
    recording = open_recording(stimuli)
    # Every check (variant, devices, checkpoint, results store) before the acquisition is heard.
    plan = prepare_live(scenario, args.results, spec.variant, options, stimuli)
    rate, tail_s = cfg["model"]["sample_rate"], cfg["data"]["tail_s"]
    if args.lsl is not None:
        print(f"live: looking for the LSL streams {args.lsl!r} and "
              f"{args.lsl_markers or markers_name(args.lsl)!r}", flush=True)
        source = LslSource(recording, args.lsl, args.lsl_markers, rate, tail_s, args.timeout,
                           resolve_timeout_s=args.resolve_timeout)
        print(f"live: reading the acquisition from {', '.join(source.hostnames)}", flush=True)
    else:
        source = ZmqSource(args.listen, recording, rate, tail_s, args.timeout,
                           curve=server_curve(args))
        print(f"live: listening for the acquisition on {source.endpoint}", flush=True)
    run_prepared(plan, source, options, encoder=args.encoder)  # it closes the source
