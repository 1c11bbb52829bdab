"""`cortexreplay summary`: the comparison table of a results store."""
import json

from ..summary import format_table, summarize


def add_parser(sub):
    p = sub.add_parser("summary", help="scores with 95%% intervals and paired comparisons")
    p.add_argument("results")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--n-perm", type=int, default=1000)
    p.set_defaults(func=main)


def main(args):
    summary = summarize(args.results, n_boot=args.n_boot, n_perm=args.n_perm)
    print(json.dumps(summary, indent=2) if args.json else format_table(summary))
