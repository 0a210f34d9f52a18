"""The report of scripts/pg-coverage: which lines of the PostgreSQL store each test module covers.

Reads the coverage data `scripts/pg-coverage measure OUT` wrote (each context a test module, ``postgres:`` for the
PostgreSQL pass, ``sqlite:`` for the sqlite pass's own PostgreSQL tests) and prints, for the PostgreSQL pass's
modules, largest cost first: the lines of src/responses_bridge/store/postgres the module covers, how many of them no
other module covers, and whether it is marked ``store_proven`` (left out of the PostgreSQL pass); then the lines the
two passes cover together with and without the marked modules. A module marked store_proven that covers a line no
module still running covers is listed as a mistake, and the exit is 1.
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import coverage

ROOT = Path(__file__).resolve().parent.parent
POSTGRES = "/responses_bridge/store/postgres/"
MARKED = re.compile(r"pytest\.mark\.store_proven\b")


def module_seconds(junit: Path) -> dict[str, float]:
    """Seconds per test module (set-up + call + teardown of its tests) from a --junitxml."""
    seconds: dict[str, float] = defaultdict(float)
    if junit.exists():
        for case in ET.parse(junit).iter("testcase"):
            module = case.get("classname", "").split(".")
            path = "/".join(part for part in module if not part[:1].isupper()) + ".py"
            seconds[path] += float(case.get("time", 0))
    return seconds


def main(out: Path) -> int:
    cov = coverage.Coverage(data_file=str(out / "data" / ".coverage"), config_file=str(out / "coveragerc"))
    cov.combine(keep=True)
    cov.save()
    data = cov.get_data()
    lines: dict[str, set[tuple[str, int]]] = defaultdict(set)
    statements: set[tuple[str, int]] = set()
    for path in data.measured_files():
        if POSTGRES not in path:
            continue
        name = path[path.index(POSTGRES) + 1:]
        statements |= {(name, line) for line in cov.analysis2(path)[1]}
        for line, contexts in data.contexts_by_lineno(path).items():
            for context in contexts:
                lines[context].add((name, line))
    pg_modules = sorted(context for context in lines if context.startswith("postgres:"))
    sqlite_lines = set().union(*(lines[c] for c in lines if c.startswith("sqlite:")))
    marked = {c for c in pg_modules if MARKED.search((ROOT / c.removeprefix("postgres:")).read_text())}
    seconds = module_seconds(out / "postgres.xml")
    everything = set().union(*lines.values())
    kept = sqlite_lines.union(*(lines[c] for c in pg_modules if c not in marked))
    print(f"src/responses_bridge/store/postgres: {len(statements)} statements")
    print(f"{'module (PostgreSQL pass)':60} {'s':>6} {'lines':>5} {'only':>5} {'not in sqlite':>13}  mark")
    mistakes = []
    for context in sorted(pg_modules, key=lambda c: -seconds[c.removeprefix("postgres:")]):
        others = set().union(*(lines[c] for c in lines if c != context))
        own = lines[context]
        module = context.removeprefix("postgres:")
        print(f"{module:60} {seconds[module]:6.1f} {len(own):5} {len(own - others):5} {len(own - sqlite_lines):13}"
              f"  {'store_proven' if context in marked else ''}")
        if context in marked and own - kept:
            mistakes.append((module, sorted(own - kept)))
    print(f"the sqlite pass's own PostgreSQL tests: {len(sqlite_lines)} lines")
    print(f"both passes, every module: {len(everything)} of {len(statements)} lines")
    print(f"both passes, the store_proven modules left out: {len(kept)} of {len(statements)} lines")
    for module, missed in mistakes:
        print(f"MISTAKE: {module} is marked store_proven but alone covers {missed}")
    return 1 if mistakes else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
