"""``python -m mm_gmpo.analysis plot|study ...`` (the same commands as ``mm-gmpo plot|study``)."""

from __future__ import annotations

import argparse
import logging
import sys

from mm_gmpo.analysis.cli_hooks import add_subcommands


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m mm_gmpo.analysis")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
