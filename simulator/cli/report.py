"""`cortexreplay report`: an HTML page of a results store's figures and tables."""
from ..report import WINDOW, build_report


def add_parser(sub):
    p = sub.add_parser("report", help="an HTML page of figures and tables (one self-contained file)")
    p.add_argument("results")
    p.add_argument("--out", required=True, help="folder for index.html and the figures' PNGs")
    p.add_argument("--force", action="store_true",
                   help="write into a non-empty folder that holds no earlier report")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--n-perm", type=int, default=1000)
    p.add_argument("--window", type=int, default=WINDOW,
                   help=f"trials in the rolling window of the curves over trials (default {WINDOW})")
    p.set_defaults(func=main)


def main(args):
    plots = build_report(args.results, args.out, force=args.force, n_boot=args.n_boot,
                         n_perm=args.n_perm, window=args.window)
    print(f"report: {len(plots)} figure(s) in {args.out}/index.html")
