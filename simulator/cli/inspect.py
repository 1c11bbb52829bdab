"""`cortexreplay inspect`: print what a recording store holds."""
from replay.store import describe


def add_parser(sub):
    p = sub.add_parser("inspect", help="describe a recording store (and validate it)")
    p.add_argument("store")
    p.set_defaults(func=main)


def main(args):
    print(describe(args.store))
