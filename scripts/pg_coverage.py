"""The report of scripts/pg-coverage: which lines of the PostgreSQL store each test module covers.

Reads the coverage data `scripts/pg-coverage measure OUT` wrote (each context a test module, ``postgres:`` for the
PostgreSQL pass, ``sqlite:`` for the sqlite pass's own PostgreSQL tests) and prints, for the PostgreSQL pass's
modules, largest cost first: the lines of src/responses_bridge/store/postgres the module covers, how many of them no
other module covers, and whether it is marked ``store_proven`` (left out of the PostgreSQL pass); then the lines the
two passes cover together with and without the marked modules. A module's tests through the Envoy door are a context
of their own (``[envoy]`` after the module), left out of the pass where the module is marked ``store_via_http_door``.
What is left out (a module marked store_proven, those Envoy-door tests) and covers a line nothing still running
covers is listed as a mistake, and the exit is 1.

``--all-measured``: the same over every measured file (the whole store package, runtime.py, serve.py,
commands/keys.py, services/files/ingestion.py, run on PostgreSQL), a stricter test than the PostgreSQL store's own
lines. ``--suggest``: which unmarked modules could be left out too (largest first, each checked against what would be
left), and the fewest modules still running that cover each one's lines (the names its mark would give).
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import coverage
from coverage.python import PythonFileReporter

ROOT = Path(__file__).resolve().parent.parent
POSTGRES = "/responses_bridge/store/postgres/"
MARKED = re.compile(r"pytest\.mark\.store_proven\b")
VIA_HTTP = re.compile(r"pytest\.mark\.store_via_http_door\b")
ENVOY = "[envoy]"
"""After a module's context: its tests through the Envoy door (scripts/pg_coverage_boot/pg_coverage_plugin.py)."""
Line = tuple[str, int]


def module_of(context: str) -> str:
    """The test module's path of a context (``postgres:tests/…/test_x.py[envoy]`` → ``tests/…/test_x.py``)."""
    return context.partition(":")[2].removesuffix(ENVOY)


def module_seconds(junit: Path) -> dict[str, float]:
    """Seconds per test module (set-up + call + teardown of its tests) from a --junitxml; those of its tests through
    the Envoy door (``envoy`` among their parameters' ids) also under the module's path with ``[envoy]`` after it."""
    seconds: dict[str, float] = defaultdict(float)
    if junit.exists():
        for case in ET.parse(junit).iter("testcase"):
            module = case.get("classname", "").split(".")
            path = "/".join(part for part in module if not part[:1].isupper()) + ".py"
            seconds[path] += float(case.get("time", 0))
            if "envoy" in case.get("name", "").partition("[")[2].rstrip("]").split("-"):
                seconds[path + ENVOY] += float(case.get("time", 0))
    return seconds


def covered(out: Path, everything: bool) -> tuple[dict[str, set[Line]], set[Line]]:
    """Lines by context, and the statements of the files looked at."""
    cov = coverage.Coverage(data_file=str(out / "data" / ".coverage"), config_file=str(out / "coveragerc"))
    cov.combine(keep=True)
    data = cov.get_data()
    lines: dict[str, set[Line]] = defaultdict(set)
    statements: set[Line] = set()
    for path in data.measured_files():
        marker = "/responses_bridge/" if everything else POSTGRES
        if marker not in path:
            continue
        name = path[path.index(marker) + 1:]
        executable = set(cov.analysis2(path)[1])
        statements |= {(name, line) for line in executable}
        # a statement over several lines is traced on each of them (Python 3.11): counted once, at its first line
        reporter = PythonFileReporter(path, cov)
        for line, contexts in data.contexts_by_lineno(path).items():
            for first in reporter.translate_lines([line]) & executable:
                for context in contexts:
                    lines[context].add((name, first))
    return lines, statements


def cover_with(missing: set[Line], candidates: dict[str, set[Line]]) -> list[str]:
    """The fewest candidates (greedy) whose lines hold ``missing``: the sqlite pass's own PostgreSQL modules first
    (they run anyway), then the PostgreSQL pass's."""
    chosen: list[str] = []
    for allowed in (lambda name: name.startswith("sqlite:"), lambda name: True):
        pool = {name: held for name, held in candidates.items() if allowed(name)}
        while missing and pool:
            best = max(pool, key=lambda name: len(pool[name] & missing))
            if not pool[best] & missing:
                break
            chosen.append(best)
            missing = missing - pool.pop(best)
    return chosen


def proofs(context: str) -> list[str]:
    """The contexts of the modules a store_proven mark names (they must keep running)."""
    text = (ROOT / module_of(context)).read_text()
    mark = re.search(r"store_proven\((.*?)reason=", text, re.S)
    named = re.findall(r"[\"'](tests/[^\"']+\.py)[\"']", mark.group(1)) if mark else []
    return [f"{'postgres' if name.startswith('tests/integration/') else 'sqlite'}:{name}" for name in named]


def main(out: Path, everything: bool, suggest: bool) -> int:
    lines, statements = covered(out, everything)
    pg_modules = sorted(context for context in lines if context.startswith("postgres:"))
    sqlite_lines = set().union(*(lines[c] for c in lines if c.startswith("sqlite:")))
    marked = {c for c in pg_modules if MARKED.search((ROOT / module_of(c)).read_text())}
    # a store_via_http_door module's Envoy-door tests, left out of the pass as a store_proven module is
    marked |= {c for c in pg_modules if c.endswith(ENVOY) and VIA_HTTP.search((ROOT / module_of(c)).read_text())}
    seconds = module_seconds(out / "postgres.xml")
    cost = {c: seconds[c.removeprefix("postgres:")] for c in pg_modules}
    every = set().union(*lines.values())
    kept = sqlite_lines.union(*(lines[c] for c in pg_modules if c not in marked))
    scope = "the measured files" if everything else "src/responses_bridge/store/postgres"
    print(f"{scope}: {len(statements)} statements")
    print(f"{'module (PostgreSQL pass)':60} {'s':>6} {'lines':>5} {'only':>5} {'not in sqlite':>13}  mark")
    mistakes = []
    for context in sorted(pg_modules, key=lambda c: -cost[c]):
        others = set().union(*(lines[c] for c in lines if c != context))
        own = lines[context]
        module = context.removeprefix("postgres:")
        mark = "" if context not in marked else "store_via_http_door" if context.endswith(ENVOY) else "store_proven"
        print(f"{module:60} {cost[context]:6.1f} {len(own):5} {len(own - others):5} {len(own - sqlite_lines):13}"
              f"  {mark}")
        if context in marked and own - kept:
            mistakes.append((module, sorted(own - kept)))
    print(f"the sqlite pass's own PostgreSQL tests: {len(sqlite_lines)} lines")
    print(f"both passes, every module: {len(every)} of {len(statements)} lines")
    print(f"both passes, with what the marks leave out left out: {len(kept)} of {len(statements)} lines "
          f"({sum(cost[c] for c in marked):.0f} of {sum(cost.values()):.0f} s of the pass's modules left out)")
    for module, missed in mistakes:
        print(f"MISTAKE: {module} is left out (its mark) but alone covers {missed}")
    if suggest:
        dropped = set(marked)
        named = {proof for c in marked for proof in proofs(c)}
        total = set().union(*(lines[c] for c in lines if c))
        for context in sorted(pg_modules, key=lambda c: -cost[c]):
            if context in dropped or context in named:
                continue
            running = {c: lines[c] for c in lines if c and c not in dropped and c != context}
            if set().union(*running.values()) >= total:
                names = cover_with(set(lines[context]), running)
                dropped.add(context)
                named.update(names)
                print(f"could leave out {context.removeprefix('postgres:')} ({cost[context]:.1f} s): covered by "
                      + ", ".join(name.partition(":")[2] for name in names))
    return 1 if mistakes else 0


if __name__ == "__main__":
    arguments = sys.argv[1:]
    sys.exit(main(Path(next(a for a in arguments if not a.startswith("--"))), "--all-measured" in arguments,
                  "--suggest" in arguments))
