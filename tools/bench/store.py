"""Store latency, measured on the store interfaces themselves: p50/p99 of storing a response (``create``), reading
it back (``get``) and loading a chain's history (``chain-load``, the ``previous_response_id`` walk of a turn), on
the SQLite file and, with ``--database-url postgresql://…``, on PostgreSQL, in one run so the two are compared on
the same machine at the same moment.

Responses carry realistic bodies (an input message, an assistant answer, usage, every Response field); chains are
``--depth`` turns long. Each store gets a fresh database: a temporary SQLite file, and on PostgreSQL the given
database, which must be empty (the bench creates its tables through the migrations and leaves its rows).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any

from responses_bridge.store.base import DEFAULT_TENANT, ResponseStore
from responses_bridge.store.open import open_stores

TENANT = DEFAULT_TENANT


def _message(item_id: str, role: str, text: str) -> dict[str, Any]:
    kind = "output_text" if role == "assistant" else "input_text"
    part: dict[str, Any] = {"type": kind, "text": text}
    if role == "assistant":
        part["annotations"] = []
    return {"id": item_id, "type": "message", "role": role, "status": "completed", "content": [part]}


def _response(response_id: str, previous: str | None, turn: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    answer = _message(f"msg_{response_id}", "assistant", f"Answer {turn}: " + "lorem ipsum dolor sit amet " * 12)
    response = {
        "id": response_id, "object": "response", "created_at": 1_790_000_000 + turn, "status": "completed",
        "model": "bench-model", "output": [answer], "previous_response_id": previous, "instructions": None,
        "metadata": {}, "parallel_tool_calls": True, "temperature": 1.0, "top_p": 1.0, "tool_choice": "auto",
        "tools": [], "store": True, "background": False, "text": {"format": {"type": "text"}},
        "usage": {"input_tokens": 40, "output_tokens": 60, "total_tokens": 100,
                  "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                  "output_tokens_details": {"reasoning_tokens": 0}},
    }
    return response, [_message(f"in_{response_id}", "user", f"Question {turn}: what comes next?")]


def _percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered):.2f} ms  p99 {p99:.2f} ms"


async def _timed(samples: list[float], work: Awaitable[object]) -> None:
    started = time.perf_counter()
    await work
    samples.append((time.perf_counter() - started) * 1000)


async def measure(store: ResponseStore, label: str, *, chains: int, depth: int) -> dict[str, list[float]]:
    """``chains`` chains of ``depth`` turns: each turn stored (create), read back (get); then every chain's last
    turn loaded with its history (chain-load)."""
    times: dict[str, list[float]] = {"create": [], "get": [], "chain-load": []}
    tips = []
    for chain in range(chains):
        previous: str | None = None
        for turn in range(depth):
            response_id = f"resp_{label}_{chain:04d}_{turn:03d}"
            response, items = _response(response_id, previous, turn)
            await _timed(times["create"], store.save_response(response, items, tenant=TENANT))
            await _timed(times["get"], store.get_response(response_id, tenant=TENANT))
            previous = response_id
        tips.append(previous)
    for tip in tips:
        assert tip is not None
        await _timed(times["chain-load"], _history(store, tip, depth))
    return times


async def _history(store: ResponseStore, tip: str, depth: int) -> None:
    history = await store.load_history(tip, tenant=TENANT)
    if history is None or len(history) != 2 * depth:
        raise RuntimeError(f"chain {tip}: {0 if history is None else len(history)} items, expected {2 * depth}")


async def main(args: argparse.Namespace) -> None:
    kinds: list[tuple[str, str | None]] = [("sqlite", None)]
    if args.database_url:
        kinds.append(("postgresql", args.database_url))
    with tempfile.TemporaryDirectory(prefix="rb-bench.store-") as directory:
        for kind, url in kinds:
            stores = await open_stores(str(Path(directory) / "bench.db"), url)
            try:
                times = await measure(stores.responses, kind, chains=args.chains, depth=args.depth)
            finally:
                await stores.close()
            for operation, samples in times.items():
                print(f"{kind:<10} {operation:<10} n={len(samples):<5} {_percentiles(samples)}", flush=True)


def run(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="scripts/bench store", description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=None,
                        help="also measure PostgreSQL, in this empty database (postgresql://…)")
    parser.add_argument("--chains", type=int, default=50, help="chains stored (each turn is one create and get)")
    parser.add_argument("--depth", type=int, default=20, help="turns per chain (chain-load walks all of them)")
    args = parser.parse_args(argv)
    if args.chains < 1 or args.depth < 1:
        parser.error("--chains and --depth must be at least 1")
    asyncio.run(main(args))


if __name__ == "__main__":
    run()
