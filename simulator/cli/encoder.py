"""`cortexreplay encoder serve`: run the encoder service in the foreground."""
from encoders import service


def add_parser(sub):
    p = sub.add_parser("encoder", help="the encoder service")
    actions = p.add_subparsers(dest="action", required=True)
    serve = actions.add_parser("serve", help="serve prequential encoding models over ZeroMQ")
    service.add_arguments(serve)
    serve.set_defaults(func=service.serve)
