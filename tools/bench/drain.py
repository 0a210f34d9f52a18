"""``scripts/bench drain [--envoy] [--streams N] [--drain S]``: SIGTERM with live streams: how long the sidecar takes
to exit, and how many streams got a terminal event.

A rolling update sends SIGTERM to a sidecar that is carrying streams; a client cut off mid-answer has nothing to
tell a retry from a lost answer. Half the streams end within the drain timeout, half would run for 60 s; the bar
is: every stream gets its terminal event (response.completed or response.failed, then [DONE]) and the process exits
within the drain timeout + 2 s of the signal (exit status 1 when it is not met).

- ``scripts/bench drain``: the HTTP door, 20 streams, RESPONSES_BRIDGE_DRAIN_TIMEOUT=2;
- ``scripts/bench drain --envoy``: through Envoy (the ext_proc door);
- ``scripts/bench drain --streams 50 --drain 5``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time

import aiohttp

from responses_bridge.demo.procs import ManagedProcess, envoy_binary, free_port, wait_http
from responses_bridge.envoy_config import render_bootstrap


async def stream(session: aiohttp.ClientSession, url: str, text: str, started: asyncio.Event) -> str:
    raw = b""
    try:
        async with session.post(f"{url}/v1/responses", json={"model": "fake-model", "input": text,
                                                             "stream": True}) as answer:
            async for chunk in answer.content.iter_any():
                raw += chunk
                started.set()
    except aiohttp.ClientError:
        return "cut"
    if not raw.endswith(b"data: [DONE]\n\n"):
        return "cut"
    last = raw.rsplit(b"event: ", 1)[-1].split(b"\n", 1)[0].decode()  # the type of the last event
    return last if last in ("response.completed", "response.failed", "response.incomplete") else "no terminal"


async def run(args: argparse.Namespace) -> int:
    work = tempfile.mkdtemp(prefix="rb-bench.drain-")
    me = [sys.executable, "-m", "responses_bridge"]
    up_port, http_port, extproc_port = free_port(), free_port(), free_port()
    upstream = ManagedProcess([*me, "fake-upstream", "--port", str(up_port)], "fake-upstream")
    upstream.start()
    await wait_http(f"http://127.0.0.1:{up_port}/health", process=upstream)
    sidecar = ManagedProcess([*me, "serve", "--upstream", f"http://127.0.0.1:{up_port}/v1", "--http-port",
                              str(http_port), "--extproc-port", str(extproc_port), "--db",
                              os.path.join(work, "drain.db"), "--log-level", "warning"], "sidecar",
                             env={"RESPONSES_BRIDGE_DRAIN_TIMEOUT": str(args.drain)})
    sidecar.start()
    envoy = None
    try:
        await wait_http(f"http://127.0.0.1:{http_port}/health", process=sidecar)
        url = f"http://127.0.0.1:{http_port}"
        if args.envoy:
            listen = free_port()
            config = os.path.join(work, "envoy.yaml")
            with open(config, "w") as file:
                file.write(render_bootstrap(listen_port=listen, extproc_port=extproc_port, http_port=http_port,
                                            upstream=f"http://127.0.0.1:{up_port}/v1", admin_port=free_port()))
            envoy = ManagedProcess([envoy_binary(), "-c", config, "--base-id", str(os.getpid() % 60000),
                                    "--disable-hot-restart", "--log-level", "error"], "envoy")
            envoy.start()
            url = f"http://127.0.0.1:{listen}"
            await wait_http(f"{url}/health", process=envoy)
        short = f"short [chunks=5] [delay={int(args.drain * 100)}]"  # half the drain timeout
        long = "long [chunks=600] [delay=100]"  # 60 s
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                         timeout=aiohttp.ClientTimeout(total=120)) as session:
            started = [asyncio.Event() for _ in range(args.streams)]
            tasks = [asyncio.create_task(stream(session, url, short if i % 2 else long, started[i]))
                     for i in range(args.streams)]
            await asyncio.wait_for(asyncio.gather(*(event.wait() for event in started)), 60)
            assert sidecar.process is not None  # started above
            signalled = time.monotonic()
            os.kill(sidecar.pid, signal.SIGTERM)
            await asyncio.to_thread(sidecar.process.wait, 120)
            exit_seconds = time.monotonic() - signalled
            results = await asyncio.gather(*tasks)
    finally:
        for process in (envoy, sidecar, upstream):
            if process is not None:
                process.stop()
    counts: dict[str, int] = {}
    for result in results:
        counts[result] = counts.get(result, 0) + 1
    terminal = sum(n for kind, n in counts.items() if kind.startswith("response."))
    door = "envoy" if args.envoy else "http"
    print(f"door={door} streams={args.streams} drain_timeout={args.drain:.1f}s exit_after_signal={exit_seconds:.2f}s "
          f"(ratio to drain timeout {exit_seconds / args.drain:.2f}) terminal_events={terminal}/{args.streams} "
          f"{counts}")
    ok = terminal == args.streams and exit_seconds <= args.drain + 2
    print("bar met" if ok else "bar NOT met")
    return 0 if ok else 1



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench drain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--envoy", action="store_true", help="through Envoy (the ext_proc door)")
    parser.add_argument("--streams", type=int, default=20, help="live streams at the signal (default 20)")
    parser.add_argument("--drain", type=float, default=2.0, help="RESPONSES_BRIDGE_DRAIN_TIMEOUT, seconds "
                        "(default 2)")
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
