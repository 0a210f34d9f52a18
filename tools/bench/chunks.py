"""``scripts/bench chunks [REV]``: per-chunk cost of the output builder, the hot path of every streamed answer.

A text chunk, a function call's argument chunk and an MCP call's argument chunk, each fed to the builder and its
event bytes taken, streaming with the SSE encoder; the best of 25 rounds of 20,000 chunks each, in ns a chunk. What
runs once per chunk is paid on every token of every stream, so a change there is measured before it is kept.

With a git revision as argument, that revision's builder is measured in the same process (its package as
``rb_base``: tools/bench/base_tree.py), in alternating rounds so that the machine's load weighs on both alike, and
the ratios are printed (e.g. ``scripts/bench chunks main``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tools.bench import base_tree

Chunk = dict[str, Any]
Side = tuple[Any, Callable[..., bytes], dict[str, Any]]

TEXT: Chunk = {"choices": [{"index": 0, "delta": {"content": "hello world "}, "finish_reason": None}]}
ARGS: Chunk = {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"a": 1, '}}]},
                            "finish_reason": None}]}


def start(name: str) -> Chunk:
    return {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                                                "function": {"name": name, "arguments": ""}}]},
                         "finish_reason": None}]}


def load(package: str) -> Side:
    builder = base_tree.module(package, "engine.responses.output_builder", "engine.output_builder")
    sse = base_tree.module(package, "engine.sse")
    tools = base_tree.module(package, "engine.tools.tools", "engine.tools")
    plan = tools.ToolPlan()
    targets = {}
    if hasattr(plan, "add_mcp_tools"):
        plan.add_mcp_tools("docs", [{"name": "search", "input_schema": {"type": "object"}}])
        targets = plan.targets
    return builder.OutputBuilder, sse.encode_event, targets


CASES = [("text", TEXT, None), ("function args", ARGS, start("f")), ("mcp args", ARGS, start("docs__search"))]


def once(builder_class: Any, encode: Callable[..., bytes], targets: dict[str, Any], chunk: Chunk,
         first: Chunk | None, n: int = 20000) -> float:
    builder = builder_class({"output": []}, encode, targets=targets)
    if first is not None:
        builder.feed(first)
    started = time.perf_counter()
    for _ in range(n):
        builder.feed(chunk)
        builder.take()
    return (time.perf_counter() - started) / n * 1e9


def measure(base_dir: str) -> None:
    sides = {"this checkout": load("responses_bridge")}
    if base_dir:
        sys.path.insert(0, base_dir)
        sides["base"] = load("rb_base")
    best: dict[tuple[str, str], float] = {}
    for _ in range(25):
        for side, (builder_class, encode, targets) in sides.items():
            for name, chunk, first in CASES:
                if name == "mcp args" and not targets:
                    continue  # a builder without server tools
                value = once(builder_class, encode, targets, chunk, first)
                best[side, name] = min(best.get((side, name), float("inf")), value)
    for name, _, _ in CASES:
        line = f"{name:>14} chunk: {best['this checkout', name]:6.0f} ns"
        if ("base", name) in best:
            line += (f"   base {best['base', name]:6.0f} ns   ratio "
                     f"{best['this checkout', name] / best['base', name]:.3f}")
        print(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench chunks", description=__doc__.split("\n\n")[0])
    parser.add_argument("revision", nargs="?", help="a git revision whose builder is measured beside this "
                        "checkout's, in the same process (e.g. main)")
    args = parser.parse_args(argv)
    if not args.revision:
        measure("")
        return 0
    with tempfile.TemporaryDirectory() as base_dir:
        # two copies of the package in one process: the base copy's metric gets a name of its own
        base_tree.as_rb_base(args.revision, Path(base_dir), [("engine/tools/tools.py", "engine/tools.py")])
        measure(base_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
