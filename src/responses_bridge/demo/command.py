"""``responses-bridge demo``: the whole ext_proc deployment on this machine, in one command.

Starts three child processes, waits until each is ready, prints ``curl`` commands that go through Envoy, and
stops everything on Ctrl-C (SIGINT) or SIGTERM:

1. the fake Chat Completions upstream (``responses-bridge fake-upstream``), unless ``--upstream`` names a real one;
2. the sidecar (``responses-bridge serve``): the ext_proc processor and the HTTP door;
3. Envoy, with the bootstrap from :func:`responses_bridge.envoy_config.render_bootstrap` in a temporary file.

Default ports (10000 for clients, 8080 HTTP door, 50051 ext_proc, 8090 fake upstream, 9901 Envoy admin: the
defaults of ``serve`` and ``envoy-config``) are used when free; a taken one is replaced by a free port, which is
said at once on stderr and again, loudly, at the top of the banner (banner.py), whose commands use the ports
in use. The examples name a real model: ``--model``, else the first one the upstream's ``GET /models`` lists. An
upstream that does not answer (or answers 404 there: a URL without ``/v1``) is said plainly, first thing and in the
banner, instead of "ready".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path

import aiohttp
import orjson

from ..config.endpoints import DEFAULT_EXTPROC_PORT, DEFAULT_HTTP_PORT
from ..config.settings import load_settings
from ..envoy_config import EXTPROC_SERVICE, LISTEN_PORT, render_bootstrap
from ..net.errors import connection_error
from ..sandbox.cgroups.per_call import CgroupParent
from ..sandbox.host import check_bubblewrap
from ..sandbox.runner import SHELL_NEEDS_PROCESSES
from .banner import Ports, banner, moved_ports, sdk_example
from .procs import ManagedProcess, envoy_binary, free_port, port_is_free, wait_http

__all__ = ["Ports", "add_parser", "choose_ports", "demo", "run", "sdk_example"]

READY_TIMEOUT = 60.0


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("demo", help="run fake upstream + sidecar + Envoy locally and print curl commands")
    parser.add_argument("--upstream", default=None,
                        help="a real Chat Completions base URL (default: start the fake upstream)")
    parser.add_argument("--port", type=int, default=LISTEN_PORT,
                        help=f"port clients call Envoy on (default {LISTEN_PORT})")
    parser.add_argument("--model", default=None,
                        help="the model the printed examples name (default: the first the upstream lists)")
    parser.add_argument("--db", default=None, help="SQLite file for stored responses (default: a temporary file)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(demo(args.upstream, args.port, args.db, args.model))
    except KeyboardInterrupt:
        return 130


def pick_port(preferred: int, taken: set[int]) -> int:
    """The preferred port when it is free, else one the kernel picks."""
    port = preferred
    if port in taken or not port_is_free(port):
        port = free_port()
        while port in taken:
            port = free_port()
    taken.add(port)
    return port


def choose_ports(listen: int) -> Ports:
    taken: set[int] = set()
    wanted = {"listen": listen, "http": DEFAULT_HTTP_PORT, "extproc": DEFAULT_EXTPROC_PORT, "upstream": 8090,
              "admin": 9901}
    chosen = {name: pick_port(port, taken) for name, port in wanted.items()}
    moved = {name: port for name, port in wanted.items() if chosen[name] != port}
    return Ports(**chosen, moved=moved)


async def demo(upstream: str | None, listen_port: int, db: str | None, model: str | None = None) -> int:
    ports = choose_ports(listen_port)
    fake = upstream is None
    upstream_url = upstream or f"http://127.0.0.1:{ports.upstream}/v1"
    # the settings the sidecar will start with (these flags over the environment and its file): a mistake is
    # the one line cli.main prints, before anything starts, not a sidecar dying behind the demo — nor the notes of
    # ports taken by another demo left running, which would bury it
    settings = load_settings({"upstream": "--upstream", "db": "--db"}, upstream=upstream_url, db=db)
    for line in moved_ports(ports, fake):  # said before anything starts, and again in the banner
        print(f"demo: {line.removeprefix('!! ')}", file=sys.stderr, flush=True)
    workdir = tempfile.mkdtemp(prefix="responses-bridge-demo-")
    db_path = db or os.path.join(workdir, "responses.sqlite")
    me = [sys.executable, "-m", "responses_bridge"]
    processes: list[ManagedProcess] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if fake:
            processes.append(_start([*me, "fake-upstream", "--port", str(ports.upstream)], "fake upstream"))
            await _ready(wait_http(f"http://127.0.0.1:{ports.upstream}/health", READY_TIMEOUT, processes[-1]), stop)
        console = console_wanted()  # on unless the environment says otherwise (RESPONSES_BRIDGE_CONSOLE)
        sidecar = _start([*me, "serve", "--upstream", upstream_url, "--http-port", str(ports.http),
                               "--upstream-via", f"http://127.0.0.1:{ports.listen}/v1",
                               "--extproc-port", str(ports.extproc), "--db", db_path, "--log-level", "warning"],
                         "sidecar", quiet=False)
        processes.append(sidecar)
        await _ready(wait_http(f"http://127.0.0.1:{ports.http}/health", READY_TIMEOUT, sidecar), stop)
        await _ready(wait_grpc_health(ports.extproc, READY_TIMEOUT, sidecar), stop)

        config = os.path.join(workdir, "envoy.yaml")
        bootstrap = render_bootstrap(listen_port=ports.listen, extproc_port=ports.extproc, http_port=ports.http,
                                     upstream=upstream_url, admin_port=ports.admin)
        await asyncio.to_thread(Path(config).write_text, bootstrap)
        envoy = _start([envoy_binary(), "-c", config, "--log-level", "warn", "--disable-hot-restart",
                        "--base-id", str(os.getpid())], "envoy", quiet=False)
        processes.append(envoy)
        await _ready(wait_http(f"http://127.0.0.1:{ports.admin}/ready", READY_TIMEOUT, envoy), stop)
        await _ready(wait_http(f"http://127.0.0.1:{ports.listen}/health", READY_TIMEOUT, envoy), stop)
        problem = None
        if fake:
            model = "fake-model"
            await _ready(_wait_translation(ports.listen, model), stop)
        else:
            listed, problem = await upstream_state(upstream_url, os.environ.get("OPENAI_API_KEY"))
            model = model or listed
            if problem is not None:
                print(f"demo: the upstream {upstream_url} {problem}", file=sys.stderr, flush=True)

        sandbox_problem = (await asyncio.to_thread(check_bubblewrap))[1]  # what the sidecar found too, in words
        cgroup = settings.code_cgroup and await asyncio.to_thread(CgroupParent.find) is not None  # as the sidecar
        shell_problem = None if cgroup else SHELL_NEEDS_PROCESSES
        desktop_problem = await asyncio.to_thread(desktop_packages_problem)
        print(banner(ports, upstream_url, config, db_path, model, fake, db_kept=db is not None, problem=problem,
                     sandbox_problem=sandbox_problem, shell_problem=shell_problem, desktop_problem=desktop_problem,
                     console=console), flush=True)
        while not stop.is_set():
            dead = [p for p in processes if not p.alive()]
            if dead:
                print(f"demo: {dead[0].name} exited unexpectedly; stopping.", file=sys.stderr)
                return 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
        print("\nstopping...", flush=True)
        return 0
    except _Stopped:
        return 130
    except (RuntimeError, TimeoutError, FileNotFoundError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    finally:
        for process in reversed(processes):
            process.stop()
        # the bootstrap, and the database unless --db named one elsewhere, go with the demo
        shutil.rmtree(workdir, ignore_errors=True)


class _Stopped(Exception):
    pass


def console_wanted() -> bool:
    """The demo serves the console (``/console`` on the sidecar's HTTP door, which the sidecar it starts inherits
    through ``RESPONSES_BRIDGE_CONSOLE``) unless the environment turns it off, or its extra is not installed."""
    if os.environ.get("RESPONSES_BRIDGE_CONSOLE", "on") != "on" or importlib.util.find_spec("jinja2") is None:
        os.environ["RESPONSES_BRIDGE_CONSOLE"] = "off"
        return False
    os.environ["RESPONSES_BRIDGE_CONSOLE"] = "on"
    return True


def desktop_packages_problem() -> str | None:
    """What the desktop lacks on this host besides the sandbox (its Debian packages), in words; None: nothing."""
    from ..sandbox.desktop.requirements import DEFAULT_BROWSER, missing_packages

    missing = missing_packages(DEFAULT_BROWSER)
    return f"the desktop needs Debian packages missing here: {', '.join(missing)}" if missing else None


def _start(argv: list[str], name: str, *, quiet: bool = True) -> ManagedProcess:
    process = ManagedProcess(argv, name, quiet=quiet)
    process.start()
    return process


async def _ready(waiting: Awaitable[None], stop: asyncio.Event) -> None:
    """Wait for a readiness check, unless Ctrl-C comes first."""
    task = asyncio.ensure_future(waiting)
    stopper = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if task not in done:
        task.cancel()
        raise _Stopped
    task.result()


async def wait_grpc_health(port: int, timeout: float, process: ManagedProcess | None = None) -> None:
    """Until the ext_proc server reports SERVING on the gRPC health service."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if process is not None and not process.alive():
                raise process.exited_early()
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=EXTPROC_SERVICE), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the ext_proc server on port {port} was not ready after {timeout:.0f} s")
            await asyncio.sleep(0.1)


async def upstream_state(url: str, key: str | None) -> tuple[str | None, str | None]:
    """``GET {url}/models`` on the real upstream: (the first model it lists, or None; what is wrong with it, in
    words, or None). Nothing answering is "unreachable"; a 404 there most likely a URL without ``/v1``; any other
    answer (a 401 too) means it is there."""
    headers = {"authorization": f"Bearer {key}"} if key else {}
    try:
        async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
                    session.get(f"{url.rstrip('/')}/models", headers=headers) as response):
            status = response.status
            data = await response.json(content_type=None) if status == 200 else None
    except (aiohttp.ClientError, TimeoutError) as exc:
        return None, (f"is unreachable ({connection_error(exc)}): start the model server (Ollama: "
                      "'ollama serve'); requests fail with 502 until it answers")
    except ValueError:  # an answer that is not JSON: there, but no model to name
        return None, None
    if status == 404:
        return None, "answers 404 at /models: does the URL end in /v1? Requests will get the same 404"
    listed = data.get("data") if isinstance(data, dict) else None
    first = listed[0] if isinstance(listed, list) and listed else None
    model = first.get("id") if isinstance(first, dict) else None
    return (model if isinstance(model, str) else None), None


async def _wait_translation(port: int, model: str) -> None:
    """A real /v1/responses round trip through Envoy, the processor and the upstream."""
    body = orjson.dumps({"model": model, "input": "ready?", "store": False})
    deadline = time.monotonic() + READY_TIMEOUT
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        while True:
            try:
                async with session.post(f"http://127.0.0.1:{port}/v1/responses", data=body,
                                        headers={"content-type": "application/json"}) as response:
                    if response.status == 200:
                        return
            except (TimeoutError, aiohttp.ClientError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("requests through Envoy did not succeed in time")
            await asyncio.sleep(0.2)
