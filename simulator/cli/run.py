"""`cortexreplay run`: run every variant of a scenario and write a results store."""
from replay.security import ClientCurve

from ..run import CHECKPOINT_EVERY, run_scenario
from ..scenario import load_scenario


def add_parser(sub):
    p = sub.add_parser("run", help="replay a recording through every variant of a scenario")
    p.add_argument("scenario", help="scenario TOML file")
    p.add_argument("--store", help="recording store (default: the scenario's data.store)")
    p.add_argument("--results", help="results store (default: results/<scenario>.zarr)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a scenario key, e.g. --set learning.lr=1e-3 (repeatable)")
    p.add_argument("--jobs", type=int, default=None,
                   help="runs in parallel on this machine (default: its cores)")
    p.add_argument("--cluster", metavar="ADDRESS", default=None,
                   help="send the runs to the Dask scheduler at ADDRESS (e.g. tcp://host:8786, "
                        "from 'dask scheduler' or dask-jobqueue) instead of local processes; the "
                        "stores must be on a file system its workers share")
    p.add_argument("--force", action="store_true", help="redo runs already in the results store")
    p.add_argument("--encoder", metavar="ENDPOINT", default=None,
                   help="use the encoder service at ENDPOINT (see 'cortexreplay encoder serve') "
                        "instead of starting one")
    p.add_argument("--resume", action="store_true",
                   help="continue interrupted runs from their last checkpoint")
    p.add_argument("--checkpoint-every", type=int, default=CHECKPOINT_EVERY, metavar="N",
                   help=f"checkpoint each run every N trials (default {CHECKPOINT_EVERY}; 0: never)")
    p.add_argument("--curve-key", metavar="FILE", default=None,
                   help="this client's NAME.key_secret, for an --encoder that requires keys")
    p.add_argument("--curve-server", metavar="FILE", default=None,
                   help="the --encoder service's public .key file (with --curve-key)")
    p.add_argument("--monitor", metavar="ENDPOINT", default=None,
                   help="publish each scored trial here for 'cortexreplay monitor' (loopback)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=main)


def main(args):
    scenario = load_scenario(args.scenario, args.sets)
    stores = {v["data"]["store"] for v in scenario.variants.values()}
    store = args.store or (stores.pop() if len(stores) == 1 else "")
    if not store:
        raise ValueError("no recording store: pass --store or set data.store in the scenario")
    results = args.results or f"results/{scenario.name}.zarr"
    if (args.curve_key is None) != (args.curve_server is None):
        raise ValueError("--curve-key and --curve-server go together: give both or neither")
    curve = ClientCurve(args.curve_key, args.curve_server) if args.curve_key else None
    if args.cluster is not None and args.jobs is not None:
        raise ValueError("--jobs sizes the local pool; with --cluster the cluster's workers decide")
    written = run_scenario(scenario, store, results, jobs=args.jobs, force=args.force,
                           progress_bar=not args.no_progress, encoder=args.encoder,
                           resume=args.resume, checkpoint_every=args.checkpoint_every,
                           monitor=args.monitor, curve=curve, cluster=args.cluster)
    print(f"run: {len(written)} run(s) written to {results}")
