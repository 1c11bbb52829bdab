"""`cortexreplay encoder serve`: run the encoder service in the foreground."""
from encoders import service


def add_parser(sub):
    p = sub.add_parser("encoder", help="the encoder service")
    actions = p.add_subparsers(dest="action", required=True)
    serve = actions.add_parser("serve", help="serve prequential encoding models over ZeroMQ")
    serve.add_argument("--bind", default="tcp://127.0.0.1:*",
                       help="endpoint (loopback only without Curve keys; '*' picks a free port)")
    serve.add_argument("--curve-secret", metavar="FILE", default=None,
                       help="the service's NAME.key_secret (see 'cortexreplay keys'); with "
                            "--curve-clients it may bind beyond loopback")
    serve.add_argument("--curve-clients", metavar="DIR", default=None,
                       help="folder of the public .key files of the clients let in")
    serve.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    serve.set_defaults(func=main)


def main(args):
    argv = ["--bind", args.bind, "--threads", str(args.threads)]
    for flag, value in (("--curve-secret", args.curve_secret), ("--curve-clients", args.curve_clients)):
        if value is not None:
            argv += [flag, value]
    return service.main(argv)
