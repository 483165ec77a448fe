"""``python -m ovi_core.training train|prepare-dataset ...``: the training commands alone (same as
``python -m ovi_core train ...``, without loading the other commands)."""

from __future__ import annotations

import logging
import sys

from ovi_core.cli.main import ArgumentParser
from ovi_core.cli.train import register


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m ovi_core.training")  # no abbreviated flags; sub-parsers inherit the class
    p.add_argument("-v", "--verbose", action="store_true")
    register(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
