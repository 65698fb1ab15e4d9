"""``python -m data_prep <command>``: dataset converters and checks (see ``--help``).

Bad input (a :class:`~data_prep.common.DataFormatError`, or any of the errors ``mm-gmpo``
itself reports in one line: a record or image that cannot be used, a file that is missing or
not parquet) is printed as one clear line with exit status 2, not a traceback: it is the
user's data, not our code, that needs fixing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.markup import escape

from data_prep import geometry3k, images, math_text, mathvision, stats
from data_prep.common import DataFormatError, console
from mm_gmpo.cli import user_errors

COMMANDS = (geometry3k, mathvision, math_text, images, stats)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep",
        description="Convert image and math datasets into mm-gmpo's record parquet format and check them.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DataFormatError, *user_errors()) as e:
        console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
