"""`cortexreplay live SCENARIO --listen ENDPOINT`: run a scenario variant on a live acquisition."""
from replay.live import ZmqSource
from replay.security import add_server_curve_arguments, server_curve
from replay.store import open_recording

from ..live import LiveOptions, live_spec, run_live
from ..scenario import load_scenario


def add_parser(sub):
    p = sub.add_parser("live", help="run a scenario variant on a live acquisition, in real time")
    p.add_argument("scenario", help="scenario TOML file")
    p.add_argument("--variant", default=None, help="the variant to run (needed if it has several)")
    p.add_argument("--listen", required=True, metavar="ENDPOINT",
                   help="where the acquisition connects its PUSH socket, e.g. "
                        "tcp://127.0.0.1:5600 (docs/protocol.md, 'Acquisition')")
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
    spec = live_spec(scenario, args.variant, options)  # checked before any socket is bound
    cfg = spec.config
    stimuli = args.stimuli or cfg["data"]["store"]
    if not stimuli:
        raise ValueError("no stimuli: pass --stimuli STORE or set data.store in the scenario")
    source = ZmqSource(args.listen, open_recording(stimuli), cfg["model"]["sample_rate"],
                       cfg["data"]["tail_s"], args.timeout, curve=server_curve(args))
    print(f"live: listening for the acquisition on {source.endpoint}", flush=True)
    try:
        run_live(scenario, source, args.results, spec.variant, options, encoder=args.encoder)
    finally:
        source.close()
