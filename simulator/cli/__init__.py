"""Command-line entry point (filled in as subcommands land)."""


def main(argv=None):
    raise SystemExit("cortexreplay: no subcommands yet")
