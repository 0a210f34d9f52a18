"""``scripts/bench NAME [ARGS...]``: every benchmark of the checkout behind one command, and the one table of them.

Each benchmark is a module of this package (``python -m tools.bench.MODULE``, the repository's root on ``PYTHONPATH``);
what it needs around it is not Python's to give, so it is said here and done by ``scripts/bench``: the extras its
venv is installed with (``scripts/_venv.sh``), whether the code interpreter's sandbox must be on the machine
(``scripts/_sandbox.sh``), and whether its relative path arguments are read from the repository's root (where the
wrappers each benchmark had in scripts/ ran it) or from the caller's directory.

``BENCHES`` is the one place a benchmark is named and described: ``scripts/bench --help`` lists it, and
tests/unit/test_bench_command.py fails on a module of this package that is neither a benchmark here nor a part of
one (``Bench.parts``), so a new benchmark cannot be left out of the list.

Only the standard library, and nothing but this table at import: ``scripts/bench`` reads it with the venv's Python,
or the machine's ``python3`` before any venv exists, so ``scripts/bench --help`` and a misspelt name answer at once
on a fresh clone.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Bench:
    """One benchmark: its module, its line in the list, and what ``scripts/bench`` sets up before running it."""

    module: str
    summary: str
    extras: str = ""
    """The venv's extras (``VENV_EXTRAS`` of scripts/_venv.sh), e.g. ``test`` for one that imports tests.support."""
    sandbox: bool = False
    """scripts/_sandbox.sh first: it runs code in the sandbox (and installs bubblewrap, after saying so)."""
    at_root: bool = False
    """Run from the repository's root (relative paths given to it are read from there), not the caller's directory."""
    parts: tuple[str, ...] = ()
    """Modules of this package that this benchmark runs and that are no benchmark of their own (one may serve
    several: base_tree.py)."""


BENCHES: dict[str, Bench] = {
    "agent-approvals": Bench("tools.bench.agents.approvals",
                             "an Agents API session's turn with an MCP call approved or denied, as ratios to a "
                             "read-only call", extras="test", at_root=True),
    "agent-sandbox": Bench("tools.bench.sandbox.agent_sandbox",
                           "the agent-sandbox backend's calls (pods warm and cold) against bubblewrap's",
                           extras="test", sandbox=True, at_root=True),
    "agents": Bench("tools.bench.agents.sessions",
                    "an Agents API session's turn against a plain response and the floor, per door, and its CPU",
                    extras="test", at_root=True),
    "batches": Bench("tools.bench.batches", "an interactive tenant's p95 beside a 2,000-line batch against alone, "
                     "and a batch's throughput on an idle bridge against a client's at the same concurrency, as "
                     "ratios", extras="test"),
    "cgroup": Bench("tools.bench.sandbox.cgroup",
                    "what a code interpreter call's cgroup costs: print(1) with and without it",
                    sandbox=True, at_root=True),
    "charges": Bench("tools.bench.charges", "what the memory budget charges a request against the RSS it grows by, per "
                     "shape (one long string, many items, chained histories, files, images, tool outputs), as "
                     "ratios beside a base revision", extras="test", at_root=True),
    "chunks": Bench("tools.bench.chunks", "per-chunk cost of the output builder (text, function and MCP arguments); "
                    "REV: against a revision", at_root=True, parts=("tools.bench.base_tree",)),
    "code": Bench("tools.bench.sandbox.code_interpreter", "a code interpreter call end to end and its breakdown, then "
                  "concurrent calls", extras="test", sandbox=True, at_root=True),
    "codex-replay": Bench("tools.bench.codex_replay", "the recorded Codex request through Envoy with the bridge and "
                          "straight to the upstream: p50/p99"),
    "desktop": Bench("tools.bench.sandbox.desktop",
                     "a computer-use desktop in the sandbox: start, action to screenshot, memory, against the "
                     "targets", extras="test", sandbox=True, at_root=True),
    "console": Bench("tools.bench.console", "the console's pages on a store of 100,000 responses, against the "
                     "50 ms target", extras="console"),
    "drain": Bench("tools.bench.drain", "SIGTERM with live streams: the sidecar's exit time and the streams' "
                   "terminal events"),
    "egress": Bench("tools.bench.sandbox.egress",
                    "the egress proxy's masking of domain secrets, and a masked download's cost to others",
                    extras="test", sandbox=True, at_root=True),
    "fairness": Bench("tools.bench.fairness", "what a hostile caller's idle bodies or greedy tenants cost another "
                      "caller, as ratios", sandbox=True),
    "files": Bench("tools.bench.files", "Files API and Uploads API throughput through each door, and the peak RSS "
                   "growth", extras="test", at_root=True),
    "idle": Bench("tools.bench.idle", "a sidecar's RSS at rest (and, with --burst, after sixteen programs' 1 MiB "
                  "answers) beside another revision's (main)", at_root=True, parts=("tools.bench.base_tree",)),
    "instructions": Bench("tools.bench.instructions", "instructions per plain request (callgrind), this tree against "
                          "another", parts=("tools.bench.callgrind_costs",)),
    "latency": Bench("tools.bench.latency", "the bridge's added latency and throughput over the upstream "
                     "(responses-bridge bench)"),
    "multi-agent": Bench("tools.bench.agents.multi_agent",
                         "a response that spawns one or two subagents, as ratios to a plain turn",
                         extras="test", at_root=True),
    "programs": Bench("tools.bench.programs", "programmatic tool calling: a program in a worker against in thread, "
                      "and end to end", extras="test", at_root=True, parts=("tools.bench.base_tree",)),
    "prompt-tools": Bench("tools.bench.prompt_tools", "per-chunk cost of the translator, native and with "
                          "tool_calling=prompt; REV: against a revision", at_root=True,
                          parts=("tools.bench.base_tree",)),
    "retrieval": Bench("tools.bench.retrieval", "vector store search: recall and MRR per ranking, ingestion MB/s, "
                       "search latency"),
    "routing": Bench("tools.bench.routing", "Codex-like sessions on four simulated vLLM replicas: the bridge's "
                     "picking beside round robin, least-request and the oracle (TTFT, hit rate, shares)"),
    "store": Bench("tools.bench.store", "store latency: p50/p99 of create, get and chain-load on SQLite (and "
                   "PostgreSQL)"),
    "streams": Bench("tools.bench.streams", "one tenant's N concurrent slow streams on each door: RSS and CPU per "
                     "stream"),
    "tool-routing": Bench("tools.bench.tool_routing", "one model turn on each path through Envoy for server-side "
                          "tool routing", at_root=True),
    "tool-search": Bench("tools.bench.tool_search", "tool search over N deferred tools: index build, search latency, "
                         "prompt tokens", at_root=True),
}

PROG = "scripts/bench"


def usage() -> str:
    """The list ``scripts/bench --help`` prints: every benchmark with its line, and where each one's options are."""
    width = max(map(len, BENCHES))
    lines = [f"usage: {PROG} NAME [ARGS...]", "",
             "Run one benchmark of the checkout with ARGS, set up as it needs (the venv's extras, the sandbox). Each",
             "is a module of tools/bench/: python -m tools.bench.MODULE, with the repository's root on PYTHONPATH.",
             "",
             "benchmarks:"]
    lines += [f"  {name:<{width}}  {bench.summary}" for name, bench in sorted(BENCHES.items())]
    lines += ["", f"A benchmark's own options: {PROG} NAME --help"]
    return "\n".join(lines)


def unknown(name: str) -> str:
    """The one line an unknown NAME gets."""
    return f"{PROG}: unknown benchmark {name!r}; known: {', '.join(sorted(BENCHES))}"


def main(argv: list[str]) -> int:
    """``--help`` (or nothing): the list; ``--setup NAME``: one line for scripts/bench to read, ``MODULE EXTRAS
    SANDBOX AT_ROOT`` (``-`` for no extras, ``1``/``0``), or the one-line error and exit 2 for an unknown NAME."""
    if argv in ([], ["-h"], ["--help"]):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2  # no NAME is a mistake, as a command without its action is for responses-bridge
    if len(argv) == 2 and argv[0] == "--setup":
        bench = BENCHES.get(argv[1])
        if bench is None:
            print(unknown(argv[1]), file=sys.stderr)
            return 2
        print(bench.module, bench.extras or "-", int(bench.sandbox), int(bench.at_root))
        return 0
    name = argv[0]
    if name not in BENCHES:
        print(unknown(name), file=sys.stderr)
        return 2
    print(f"{PROG}: run it as `{PROG} {name}` (or `python -m {BENCHES[name].module}`)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        status = main(sys.argv[1:])
        sys.stdout.flush()
    except BrokenPipeError:  # the list piped into head or grep -m: what was read is enough, no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the interpreter's own flush at exit
        status = 0
    sys.exit(status)
