"""``scripts/bench latency``: ``responses-bridge bench``, run as a module of the checkout.

The benchmark is a command of the CLI (cli.py adds it when it runs from a source checkout) and stays one; this
module lets ``scripts/bench`` start it as it starts every other benchmark, ``python -m tools.bench.NAME``, with the
same options and exit status as ``responses-bridge bench`` (bench.py's ``main``: the parser without the CLI, which
the tooling never imports)."""

from __future__ import annotations

import sys

from .bench import main

if __name__ == "__main__":
    sys.exit(main())
