"""`cortexreplay encoder serve`: run the encoder service in the foreground."""
from encoders import service


def add_parser(sub):
    p = sub.add_parser("encoder", help="the encoder service")
    actions = p.add_subparsers(dest="action", required=True)
    serve = actions.add_parser("serve", help="serve prequential encoding models over ZeroMQ")
    serve.add_argument("--bind", default="tcp://127.0.0.1:*",
                       help="endpoint (loopback only; '*' picks a free port)")
    serve.set_defaults(func=main)


def main(args):
    return service.main(["--bind", args.bind])
