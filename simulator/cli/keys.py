"""`cortexreplay keys`: make a CurveZMQ key pair for an encoder service or one of its clients."""
from replay.security import make_keys


def add_parser(sub):
    p = sub.add_parser("keys", help="make a CurveZMQ key pair (for binding beyond loopback)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write the pair into")
    p.add_argument("--name", default="cortexreplay",
                   help="file name of the pair: NAME.key and NAME.key_secret (default cortexreplay)")
    p.set_defaults(func=main)


def main(args):
    public, secret = make_keys(args.out, args.name)
    print(f"keys: wrote {public} (public) and {secret} (secret, keep it private)")
    print(f"keys: for a service, pass --curve-secret {secret} --curve-clients DIR and give its "
          f"clients {public.name}; for a client, copy {public.name} into the service's DIR")
