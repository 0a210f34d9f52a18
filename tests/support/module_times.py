"""How long each test module holds its worker, as measured: the order xdist hands modules out in.

With ``--dist loadfile`` a module is one worker's unit of work, and the pass ends when its last module does: a
module of minutes handed out last keeps one worker busy while the others sit idle. The number of tests is a poor
guess of a module's length (test_fair_pools.py's 14 tests held a worker for 164 s, test_listing_store.py's 135 for
15 s), so the modules are ordered by the seconds a run measured (``tests/module_times.json``, written by
``scripts/module-times`` from a ``--junitxml``), per store, longest first. A module the table does not know yet (new
since it was written) is given its number of tests times the table's seconds per test.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

TABLE = Path(__file__).resolve().parent.parent / "module_times.json"


def load(store: str, table: Path = TABLE) -> dict[str, float]:
    """The measured seconds per module (its path) for ``store`` (``sqlite`` or ``postgres``), the sqlite pass's
    where that store has none; empty when there is no table."""
    try:
        stores: dict[str, dict[str, float]] = json.loads(table.read_text())
    except FileNotFoundError:
        return {}
    return {**stores.get("sqlite", {}), **stores.get(store, {})}


def estimates(measured: Mapping[str, float], sizes: Mapping[str, int]) -> dict[str, float]:
    """Seconds per module of ``sizes`` (its number of tests): the measured figure, else its tests times the
    measured seconds per test (the number of tests alone when nothing was measured)."""
    known = [module for module in sizes if module in measured]
    per_test = (sum(measured[module] for module in known) / sum(sizes[module] for module in known)) if known else 1.0
    return {module: measured.get(module, count * per_test) for module, count in sizes.items()}


def from_junit(paths: Iterable[Path]) -> dict[str, float]:
    """Seconds per module summed over the test cases of ``--junitxml`` files (a case's time is its set-up, call and
    teardown: a module's fixtures count in its first and last test)."""
    seconds: Counter[str] = Counter()
    for path in paths:
        for case in ElementTree.parse(path).getroot().iter("testcase"):
            dotted = (case.get("classname") or "").split(".")
            # tests.integration.test_x[.Class] -> tests/integration/test_x.py
            parts = [part for part in dotted if not part[:1].isupper()]
            if parts:
                seconds["/".join(parts) + ".py"] += float(case.get("time") or 0)
    return {module: round(total, 1) for module, total in sorted(seconds.items())}
