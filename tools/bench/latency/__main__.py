"""``scripts/bench latency``: ``responses-bridge bench``, run as a module of the checkout.

The benchmark is a command of the CLI (cli.py adds it when it runs from a source checkout) and stays one; this
module lets ``scripts/bench`` start it as it starts every other benchmark, ``python -m tools.bench.NAME``, with the
same options, help and exit status as ``responses-bridge bench``."""

from __future__ import annotations

import sys

from responses_bridge.cli import main as cli_main


def main(argv: list[str] | None = None) -> int:
    return cli_main(["bench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
