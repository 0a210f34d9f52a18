"""``scripts/bench charges``: what the memory budget charges a request against what the sidecar really grows by
holding it, per shape of request, for a base revision (``--base-src``: the last landed main's ``src``) and this
checkout in one run.

A charge that tells the truth is what lets a budget of 1 GiB admit what 1 GiB of resident memory holds: charged ten
times too much, two holders fill a budget with most of its memory idle; charged too little, the process passes its
watermark with the budget half empty. So for each shape, on a fresh sidecar (nothing of an earlier shape left in
its heap) with a large budget (nothing refused, nothing capped at a share): its RSS at rest; ``--holders`` requests
of the shape sent at once, each streamed and held by the fake model after its first text (so everything it loaded,
parsed and translated is held, as a slow model holds it); the budget's held gauge and the RSS then, and the peak
(the kernel's VmHWM, reset before, and RSS sampled every 20 ms). Printed per shape and tree: the charge per request,
the peak growth and the growth while held, per request, and **charge ÷ peak growth** (the goal: 0.5–2).

The shapes, each named as the issue measures them:

* ``long-string``: one input string of ``--string-mib`` MiB;
* ``small-items``: ``--items`` tiny input items in one body;
* ``chain-10k``, ``chain-40k``: a stored response of 10,000 / 40,000 tiny items (stored by a sidecar first, then
  measured on a fresh one over the same database), continued by tiny requests (``previous_response_id``);
* ``file-by-id``: a text file of ``--file-mib`` MiB uploaded, then named by ``input_file.file_id``;
* ``image``: an ``input_image`` data URL of ``--file-mib`` MiB;
* ``tool-outputs``: a function call and its ``--file-mib`` MiB output as input items;
* ``program-args``: a function call whose ``--file-mib`` MiB of arguments the request carries back.

Nothing here asserts a bound; tests/integration/test_memory_truth.py asserts the behaviour it is for.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from responses_bridge.demo.procs import ManagedProcess, free_port, wait_http
from tests.support.bridge import budget_held_bytes

from ..process_memory import family_pids, family_rss_mb, process_status_mb

MIB = 1 << 20
MODEL = "fake-model"
HOLD = "[stall_after=1:600000]"
BUDGET = 8 << 30  # nothing refused, nothing capped at a share (4 GiB)
KEY = "sk-bench"


@dataclass
class Tree:
    label: str
    src: str | None
    rows: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # shape: (charge, peak, held) MiB


@dataclass
class Shape:
    name: str
    bodies: Callable[[str, aiohttp.ClientSession, str], Awaitable[list[bytes]]]
    """The bodies of the held requests, made against the sidecar at that URL (a file uploaded, a chain named)."""
    stored: int = 0
    """Tiny items stored first, by a sidecar of its own, for a chain to continue (0: none)."""


def tiny_items(count: int) -> list[dict[str, Any]]:
    return [{"role": "user", "content": "x"}] * count


def _body(input_: Any, **extra: Any) -> bytes:
    return orjson.dumps({"model": MODEL, "stream": True, "input": input_, **extra})


def shapes(args: Any) -> list[Shape]:
    size = int(args.file_mib * MIB)
    holders = args.holders

    async def long_string(url: str, session: aiohttp.ClientSession, previous: str) -> list[bytes]:
        return [_body(f"{HOLD} " + "x" * int(args.string_mib * MIB))] * holders

    async def small_items(url: str, session: aiohttp.ClientSession, previous: str) -> list[bytes]:
        return [_body([*tiny_items(args.items - 1), {"role": "user", "content": HOLD}])] * holders

    async def chained(url: str, session: aiohttp.ClientSession, previous: str) -> list[bytes]:
        return [_body(f"go {HOLD}", previous_response_id=previous)] * holders

    async def file_by_id(url: str, session: aiohttp.ClientSession, previous: str) -> list[bytes]:
        form = aiohttp.FormData()
        form.add_field("purpose", "user_data")
        form.add_field("file", ("words " * (size // 6)).encode(), filename="notes.txt", content_type="text/plain")
        async with session.post(f"{url}/v1/files", data=form, headers=_auth()) as answer:
            made = await answer.json()
        assert answer.status == 200, made
        content = [{"type": "input_file", "file_id": made["id"]}, {"type": "input_text", "text": f"read {HOLD}"}]
        return [_body([{"role": "user", "content": content}])] * holders

    async def image(url: str, session: aiohttp.ClientSession, previous: str) -> list[bytes]:
        data = base64.b64encode(os.urandom(size * 3 // 4)).decode()
        content = [{"type": "input_image", "image_url": f"data:image/png;base64,{data}"},
                   {"type": "input_text", "text": f"look {HOLD}"}]
        return [_body([{"role": "user", "content": content}])] * holders

    def calls(arguments: str, output: str) -> list[dict[str, Any]]:
        return [{"type": "function_call", "call_id": "call_1", "name": "run", "arguments": arguments},
                {"type": "function_call_output", "call_id": "call_1", "output": output},
                {"role": "user", "content": f"next {HOLD}"}]

    async def tool_outputs(url: str, session: aiohttp.ClientSession, previous: str) -> list[bytes]:
        return [_body(calls("{}", "y" * size), tools=[_tool()])] * holders

    async def program_args(url: str, session: aiohttp.ClientSession, previous: str) -> list[bytes]:
        arguments = orjson.dumps({"code": "z" * size}).decode()
        return [_body(calls(arguments, "done"), tools=[_tool()])] * holders

    return [Shape("long-string", long_string), Shape("small-items", small_items),
            Shape("chain-10k", chained, stored=10_000), Shape("chain-40k", chained, stored=40_000),
            Shape("file-by-id", file_by_id), Shape("image", image), Shape("tool-outputs", tool_outputs),
            Shape("program-args", program_args)]


def _tool() -> dict[str, Any]:
    return {"type": "function", "name": "run", "parameters": {"type": "object", "properties": {}}}


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


class Sidecar:
    """One tree's sidecar over ``db``: started, ready, stopped."""

    def __init__(self, tree: Tree, upstream: str, db: str) -> None:
        self.port = free_port()
        env = {"RESPONSES_BRIDGE_MEMORY_BUDGET_BYTES": str(BUDGET), "RESPONSES_BRIDGE_MEMORY_WATCH_INTERVAL": "0"}
        if tree.src:
            env["PYTHONPATH"] = tree.src
        self.process = ManagedProcess([
            sys.executable, "-m", "responses_bridge", "serve", "--upstream", upstream, "--http-port", str(self.port),
            "--extproc-port", str(free_port()), "--db", db, "--log-level", "error", "--no-extproc"],
            f"sidecar-{tree.label}", env=env)
        self.url = f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Sidecar:
        self.process.start()
        await wait_http(f"{self.url}/health", process=self.process)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.process.stop)

    def rss(self) -> float:
        return family_rss_mb(self.process.pid)

    def reset_peak(self) -> bool:
        try:
            for pid in family_pids(self.process.pid):
                with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
                    clear_refs.write("5")
            return True
        except OSError:
            return False

    def high_water(self) -> float:
        return sum(process_status_mb(pid, "VmHWM") for pid in family_pids(self.process.pid))


async def store_chain(url: str, session: aiohttp.ClientSession, items: int) -> str:
    async with session.post(f"{url}/v1/responses", data=orjson.dumps({"model": MODEL, "input": tiny_items(items)}),
                            headers={**_auth(), "Content-Type": "application/json"}) as answer:
        stored = await answer.json()
    assert answer.status == 200, stored
    return str(stored["id"])


async def _held(session: aiohttp.ClientSession, url: str, body: bytes) -> aiohttp.ClientResponse:
    """A streamed request, once its first text is in (everything it loaded is held; the model stalls)."""
    answer = await session.post(f"{url}/v1/responses", data=body, headers={**_auth(), "Content-Type":
                                                                          "application/json"})
    if answer.status != 200:
        raise SystemExit(f"a held request was answered {answer.status}: {(await answer.text())[:300]}")
    async for line in answer.content:
        if b"response.output_text.delta" in line:
            return answer
        if b"response.failed" in line:
            raise SystemExit(f"a held request failed: {line[:300]!r}")
    raise SystemExit("a held request ended before its first text")


async def measure(tree: Tree, shape: Shape, upstream: str, tmp: str, session: aiohttp.ClientSession,
                  holders: int) -> None:
    db = os.path.join(tmp, f"{tree.label}-{shape.name}.db")
    previous = ""
    if shape.stored:
        async with Sidecar(tree, upstream, db) as storing:
            previous = await store_chain(storing.url, session, shape.stored)
    async with Sidecar(tree, upstream, db) as sidecar:
        bodies = await shape.bodies(sidecar.url, session, previous)
        await asyncio.sleep(1.0)
        rest, held_before = sidecar.rss(), await budget_held_bytes(sidecar.url)
        exact = sidecar.reset_peak()
        peak = rest
        answers: list[aiohttp.ClientResponse] = []

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, sidecar.rss())
                await asyncio.sleep(0.02)

        sampler = asyncio.create_task(sample())
        try:
            answers = list(await asyncio.gather(*(_held(session, sidecar.url, body) for body in bodies)))
            del bodies
            await asyncio.sleep(0.5)
            charged = (await budget_held_bytes(sidecar.url) - held_before) / MIB
            now = sidecar.rss()
        finally:
            sampler.cancel()
            for answer in answers:
                answer.close()
        peak = max(peak, now, sidecar.high_water() if exact else 0.0)
    tree.rows[shape.name] = (charged / holders, (peak - rest) / holders, (now - rest) / holders)


def report(trees: list[Tree], args: Any) -> None:
    print(f"charge / RSS growth per request, {args.holders} held at once per shape (goal: charge / peak 0.5-2)")
    print(f"{'shape':<14}" + "".join(f"{tree.label + ': charge, peak, held MiB, ratio':>48}" for tree in trees))
    for name in trees[0].rows:
        cells = []
        for tree in trees:
            charge, peak, held = tree.rows.get(name, (0.0, 0.0, 0.0))
            ratio = charge / peak if peak > 0.5 else float("nan")
            cells.append(f"{charge:9.1f} {peak:9.1f} {held:9.1f} {ratio:8.2f}")
        print(f"{name:<14}" + "".join(f"{cell:>48}" for cell in cells))


async def run(args: Any) -> None:
    trees = [Tree("base", os.path.abspath(args.base_src))] if args.base_src else []
    trees.append(Tree("this", None))
    wanted = [shape for shape in shapes(args) if not args.shapes or shape.name in args.shapes]
    with tempfile.TemporaryDirectory(prefix="rb-charges-") as tmp:
        port = free_port()
        upstream = ManagedProcess([sys.executable, "-m", "responses_bridge", "fake-upstream", "--port", str(port)],
                                  "fake-upstream")
        upstream.start()
        try:
            await wait_http(f"http://127.0.0.1:{port}/health", process=upstream)
            timeout = aiohttp.ClientTimeout(total=None, sock_read=300)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                for shape in wanted:
                    for tree in trees:
                        await measure(tree, shape, f"http://127.0.0.1:{port}/v1", tmp, session, args.holders)
                    print(f"  {shape.name}: " + ", ".join(
                        f"{tree.label} {tree.rows[shape.name][0]:.1f} MiB charged / "
                        f"{tree.rows[shape.name][1]:.1f} MiB peak" for tree in trees), file=sys.stderr)
        finally:
            upstream.stop()
    report(trees, args)


def main() -> None:
    parser = argparse.ArgumentParser(prog="scripts/bench charges", description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-src", metavar="DIR", help="another checkout's src to run beside this one "
                        "(say, the last landed main's)")
    parser.add_argument("--holders", type=int, default=2, help="requests of a shape held at once")
    parser.add_argument("--string-mib", type=float, default=18.0, help="MiB of the long input string")
    parser.add_argument("--items", type=int, default=40_000, help="tiny items of the many-items body")
    parser.add_argument("--file-mib", type=float, default=4.0,
                        help="MiB of a file's text, an image, a tool output, a program's arguments")
    parser.add_argument("shapes", nargs="*", help="only these shapes (default: all)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
