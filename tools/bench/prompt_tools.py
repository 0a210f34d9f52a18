"""``scripts/bench prompt-tools [REV]``: per-chunk cost of a streamed answer through the whole translator
(``Translator.on_upstream_chunk``), native and with ``tool_calling=prompt``.

The ``llamacpp`` profile reads the answer's text for calls written as text, which is work on every chunk; measured
for 2000-chunk answers of text and of a call written as text, the median of 30 rounds, in µs a chunk.

With a git revision as argument, that revision's translator (native) is measured in the same process (its package
as ``rb_base``: tools/bench/base_tree.py), in alternating rounds, and every figure is given as a ratio to it (e.g.
``scripts/bench prompt-tools main``); without one, the ratios are to this checkout's native text.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from tools.bench import base_tree

CHUNKS = 2000


def frames(pieces: list[str]) -> list[bytes]:
    out = [b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
           + b"\n\n" for piece in pieces]
    end = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    return [*out, b"data: " + orjson.dumps(end) + b"\n\ndata: [DONE]\n\n"]


TEXT = frames(["hello world, a line ends\n" if i % 5 == 4 else "hello world " for i in range(CHUNKS)])
CALL = frames(["functions.get_weather:\n{"] + ['"city": "Paris", ' for _ in range(CHUNKS - 1)])
TOOLS = [{"type": "function", "name": "get_weather",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
BODY = orjson.dumps({"model": "m", "input": "hi", "stream": True, "tools": TOOLS})


def side(package: str, profile: str) -> Callable[[list[bytes]], float]:
    translator = base_tree.module(package, "engine.responses.translator", "engine.translator")
    request = base_tree.module(package, "protocol.responses.request", "protocol.request")
    options = base_tree.module(package, "engine.responses.profiles", "engine.profiles").options_for(
        base_tree.module(package, "engine.options").EngineOptions(), profile)

    def run(data: list[bytes]) -> float:
        t = translator.Translator(request.parse_request(BODY), [], None, options)
        t.build_first_request()
        t.on_upstream_headers(200, "text/event-stream")
        started = time.perf_counter()
        for frame in data:
            t.on_upstream_chunk(frame)
        t.complete()
        return (time.perf_counter() - started) / len(data) * 1e6
    return run


def measure(base_dir: str) -> None:
    cases = {}
    if base_dir:
        sys.path.insert(0, base_dir)
        cases["base: native, text"] = (side("rb_base", "generic"), TEXT)
    cases.update({"native, text": (side("responses_bridge", "generic"), TEXT),
                  "native, a call as text": (side("responses_bridge", "generic"), CALL),
                  "prompt, text": (side("responses_bridge", "llamacpp"), TEXT),
                  "prompt, a call as text": (side("responses_bridge", "llamacpp"), CALL)})
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(30):
        for name, (run, data) in cases.items():
            times[name].append(run(data))
    medians = {name: statistics.median(values) for name, values in times.items()}
    reference = next(iter(medians))
    for name, value in medians.items():
        print(f"{name:>24}: {value:5.2f} us a chunk   ratio to {reference} {value / medians[reference]:.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench prompt-tools", description=__doc__.split("\n\n")[0])
    parser.add_argument("revision", nargs="?", help="a git revision whose translator (native) is measured beside "
                        "this checkout's, in the same process, and every figure given as a ratio to it (e.g. main)")
    args = parser.parse_args(argv)
    if not args.revision:
        measure("")
        return 0
    with tempfile.TemporaryDirectory() as base_dir:
        # two copies of the package in one process: the base copy's metrics get names of their own
        base_tree.as_rb_base(args.revision, Path(base_dir),
                             [("observability/metrics.py",), ("engine/tools/tools.py", "engine/tools.py"),
                              ("store/metrics.py",)], kinds="Counter|Histogram|Gauge")
        measure(base_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
