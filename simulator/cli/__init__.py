"""The ``cortexreplay`` command: one short module per subcommand, each parsing and calling the library."""
from __future__ import annotations

import argparse
import sys

from encoders.client import EncoderError

from . import (encoder, export, fake_scanner, import_, inspect, keys, live, monitor, pretrain,
               report, run, stimuli, summary, synth, validate)

COMMANDS = (synth, pretrain, import_, inspect, run, summary, report, export, validate, encoder,
            monitor, keys, fake_scanner, stimuli, live)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="cortexreplay",
        description="Replay auditory-cortex recordings through continuously learning audio networks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except (ValueError, ArithmeticError, EncoderError, FileNotFoundError) as err:
        # A user's mistake gets one line that says what is wrong, never a traceback.
        print(f"cortexreplay {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cortexreplay {args.command}: interrupted", file=sys.stderr)
        return 130
