"""What a started sidecar has not imported: the parts only some requests need are loaded by their first use.

Each of them costs resident memory in every process, whether it is used or not (numpy alone about 11 MB), so
the modules below stay out of a sidecar that has started and answered plain requests; the first request that
needs one pays the import. The sidecar is started as users start it (the CLI, in its own process, both doors,
the SQLite store, the test venv's extras all installed), and writes its ``sys.modules`` on SIGUSR1: once idle
after ``/health``, and again after a plain ``POST /v1/responses`` through each door. A module-level import of any
of them anywhere on that path fails here, naming the module.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import orjson
import pytest

from responses_bridge.adapters.extproc import service as external_processor_pb2_grpc
from responses_bridge.adapters.extproc._pb.ext_proc_pb2 import ProcessingResponse
from responses_bridge.demo import fake_server
from responses_bridge.demo.procs import free_port, wait_http
from tests.unit.test_extproc_servicer import request_body, request_headers, response_body, response_headers

LAZY = (
    "numpy",  # vector stores: embeddings, the chunk index's vectors
    "static_model",  # the local embedder's encoder (its model files are hashed at start, not imported)
    "pypdf",  # PDF text for ingestion ...
    "responses_bridge.services.files.retrieval.extract",  # ... and the other extractors (HTML, XML, CSV)
    "tiktoken",  # chunking and input token counts
    "yaml",  # configuration files: read with --config, printed by 'config show'
    "responses_bridge.probe.checks",  # probing: 'mode: auto' upstreams and the probe command
    "mcp",  # the remote MCP tool's client library ...
    "httpx",  # ... and its HTTP client
    "responses_bridge.run.tools.mcp_session",
    "asyncpg",  # the PostgreSQL store (RESPONSES_BRIDGE_DATABASE_URL)
    "pgvector",
    "responses_bridge.store.postgres",
    "opentelemetry",  # tracing (OTEL_EXPORTER_OTLP_ENDPOINT)
    "pandas",  # the code interpreter's libraries run in the sandbox, never in the sidecar
    "matplotlib",
    "cryptography",  # the Agents executor's Noise relay (its handshake's primitives: ~9 MiB resident) ...
    "responses_bridge.services.agents.executor.noise",
    "responses_bridge.services.agents.executor.relay",
    "packaging",  # an environment's Python packages, checked as requirement specifiers
    "py_mini_racer",  # programs: V8 runs in the programs' worker processes, never in the sidecar
    "responses_bridge.run.programs",  # programs: their host, worker pool, isolate and replay, loaded by the first
    "responses_bridge.engine.tools.program_reader",  # request offering one, the host made when the first one runs
    "kubernetes",  # the agent-sandbox pod backend's client
    "kubernetes_asyncio",
    "apscheduler",  # automations' cron schedules: read by the first automation created or found stored
    "anyio",  # an MCP server's connect deadline and the first name resolved for it or a sandbox's egress
    "ahocorasick_rs",  # byte sequences replaced in a stream: an egress secret, a stored chat completion's id
    # the Agents API, built by the first request under /agents or /vaults, or at start when its store holds a record
    # of it (adapters/http/agents/capability.py): its routes, services and protocol, and the sessions' desktops
    "responses_bridge.adapters.http.agents.agents_routes",
    "responses_bridge.services.agents.agents",
    "responses_bridge.services.agents.sessions",
    "responses_bridge.services.agents.automations",
    "responses_bridge.services.agents.computer",
    "responses_bridge.services.agents.desktop_watch.feed",
    "responses_bridge.protocol.agents",
    "responses_bridge.sandbox.desktop",
    "responses_bridge.adapters.http.websocket",  # WebSocket mode: its first connection
    "responses_bridge.envoy_config.bootstrap",  # rendering Envoy's configuration: the commands that print it
    "responses_bridge.envoy_config.envoy_gateway",
    "platformdirs",  # the default database's directory: a sidecar given --db never asks for it
    # vector stores: the service, its ingestion, retrieval (embedders, chunking, search), the Embeddings API over
    # the embedder and the routes, built by the first request under /vector_stores, file_search call or embedding
    # the embedder answers; at start only when a previous process left files in progress
    "responses_bridge.services.files.retrieval",
    "responses_bridge.services.files.vector_stores",
    "responses_bridge.services.files.vector_store_shapes",
    "responses_bridge.services.files.ingestion",
    "responses_bridge.services.files.embeddings",
    "responses_bridge.adapters.http.files.vector_stores_routes",
    # the code sandbox and what it backs (runtime_sandbox.py): built by the first request under /containers or
    # /skills, the first code_interpreter or hosted shell tool, the Agents API's load; at start only when the store
    # holds a container (its purge); serve's check of the host's sandbox runs in a process of its own
    # (sandbox/doctor.py start_check)
    "responses_bridge.sandbox.runner",  # bubblewrap calls ...
    "responses_bridge.sandbox.call",
    "responses_bridge.sandbox.launcher",
    "responses_bridge.sandbox.command",
    "responses_bridge.sandbox.seccomp",
    "responses_bridge.sandbox.pipe_reader",
    "responses_bridge.sandbox.slots",  # the sandboxes' (and the programs') fairly shared slots
    "responses_bridge.sandbox.backends",
    "responses_bridge.sandbox.doctor",
    "responses_bridge.sandbox.host",
    "responses_bridge.sandbox.cgroups",  # ... their cgroups ...
    "responses_bridge.sandbox.trees",  # ... and their trees (workspaces, skills, packages)
    "responses_bridge.sandbox.read_only",
    "responses_bridge.sandbox.scratch",
    "responses_bridge.sandbox.egress.proxy",  # the egress proxy (its policies are parsed by the tools' options)
    "responses_bridge.sandbox.egress.tunnel",
    "responses_bridge.sandbox.egress.domain_secrets",
    "responses_bridge.sandbox.egress.scope",
    "responses_bridge.sandbox.agent_sandbox",  # the pod backend (its kubernetes clients are in LAZY)
    "responses_bridge.services.containers",  # the Containers and Skills APIs ...
    "responses_bridge.protocol.containers",
    "responses_bridge.adapters.http.containers.containers_routes",
    "responses_bridge.adapters.http.containers.skills_routes",
    "responses_bridge.services.tools",  # ... and the tools over them: the code interpreter, the hosted shell
)

# Every setting that would make the sidecar load one of them on purpose is left out of its environment.
_LEFT_OUT = ("RESPONSES_BRIDGE_", "OTEL_")

CHILD = textwrap.dedent("""
    import json, os, signal, sys

    def dump(signum, frame):
        with open(OUT + ".part", "w") as handle:
            json.dump(sorted(sys.modules), handle)
        os.replace(OUT + ".part", OUT)

    signal.signal(signal.SIGUSR1, dump)
    from responses_bridge.cli import main
    sys.exit(main(ARGV))
""")


@dataclass
class Started:
    process: subprocess.Popen[bytes]
    http_url: str
    extproc_port: int
    modules_file: Path

    async def modules(self) -> set[str]:
        """The sidecar's ``sys.modules`` now."""
        self.modules_file.unlink(missing_ok=True)
        self.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 30
        while not self.modules_file.exists():
            assert self.process.poll() is None, "the sidecar exited"
            assert time.monotonic() < deadline, "the sidecar wrote no module list"
            await asyncio.sleep(0.05)
        return set(orjson.loads(self.modules_file.read_bytes()))


@pytest.fixture
async def started(tmp_path: Path) -> AsyncIterator[Started]:
    runner, upstream_port = await fake_server.start()
    http_port, extproc_port = free_port(), free_port()
    argv = ["serve", "--upstream", f"http://127.0.0.1:{upstream_port}/v1", "--db", str(tmp_path / "bridge.db"),
            "--http-port", str(http_port), "--extproc-port", str(extproc_port), "--log-level", "warning"]
    modules_file = tmp_path / "modules.json"
    program = f"OUT = {str(modules_file)!r}\nARGV = {argv!r}\n{CHILD}"
    env = {key: value for key, value in os.environ.items() if not key.startswith(_LEFT_OUT)}
    process = subprocess.Popen([sys.executable, "-c", program], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        await wait_http(f"http://127.0.0.1:{http_port}/health", timeout=60)
        yield Started(process, f"http://127.0.0.1:{http_port}", extproc_port, modules_file)
    finally:
        process.terminate()
        errors = process.communicate(timeout=60)[1].decode(errors="replace")
        await runner.cleanup()
    assert "Traceback" not in errors, errors[-2000:]


def loaded(modules: set[str]) -> list[str]:
    """The names of ``LAZY`` that ``modules`` holds, themselves or a submodule."""
    return sorted(name for name in LAZY if any(module == name or module.startswith(name + ".") for module in modules))


async def plain_http_requests(base: str) -> None:
    async with aiohttp.ClientSession() as session:
        for stream in (False, True):
            async with session.post(f"{base}/v1/responses", json={"model": "fake-model", "input": "Hello there",
                                                                   "stream": stream}) as response:
                assert response.status == 200, await response.text()
                body = await response.read()
            assert body.endswith(b"data: [DONE]\n\n") if stream else orjson.loads(body)["status"] == "completed"


async def plain_extproc_exchange(port: int) -> None:
    """One JSON request through the ext_proc door as Envoy drives it: the request phase, then the upstream's
    Chat Completions answer translated in the response phase."""
    completion = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "fake-model",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = external_processor_pb2_grpc.ExternalProcessorStub(channel).Process()
        await call.write(request_headers("POST", "/v1/responses"))
        await call.write(request_body({"model": "fake-model", "input": "Hello there"}))
        replies: list[ProcessingResponse] = [await call.read(), await call.read()]
        await call.write(response_headers(200, "application/json"))
        await call.write(response_body(orjson.dumps(completion), True))
        while not any(reply.WhichOneof("response") == "response_body" for reply in replies):
            replies.append(await asyncio.wait_for(call.read(), 30))
        await call.done_writing()
    body = next(reply for reply in replies if reply.WhichOneof("response") == "response_body")
    answer = body.response_body.response.body_mutation
    text = answer.body or answer.streamed_response.body
    assert orjson.loads(text)["status"] == "completed", text[:300]


async def test_an_idle_sidecar_has_not_imported_what_only_some_requests_need(started: Started) -> None:
    idle = await started.modules()
    assert "responses_bridge.adapters.extproc.server" in idle and "responses_bridge.runtime" in idle  # it did start
    assert loaded(idle) == []


async def test_plain_requests_through_either_door_import_none_of_them(started: Started) -> None:
    idle = await started.modules()
    await plain_http_requests(started.http_url)
    await plain_extproc_exchange(started.extproc_port)
    after = await started.modules()
    assert loaded(after) == []
    # the hot path imported nothing at all: everything it needs was loaded at start
    assert sorted(after - idle) == []


RETRIEVAL = ("responses_bridge.services.files.vector_stores", "responses_bridge.services.files.retrieval")


async def test_what_needs_no_vector_store_loads_none_and_the_first_that_does_loads_it(started: Started) -> None:
    """The embedder listed in GET /v1/models, an upstream's embedding model passed through, a file uploaded and
    deleted (in no vector store) load nothing of vector stores; the first request under /vector_stores does."""
    base = started.http_url
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/v1/models") as response:
            listed = await response.json()
        assert response.status == 200 and "tokenlearn-static-model" in [model["id"] for model in listed["data"]]
        async with session.post(f"{base}/v1/embeddings", json={"model": "fake-embedding", "input": "hi"}) as response:
            assert response.status == 200 and len((await response.json())["data"]) == 1
        form = aiohttp.FormData({"purpose": "assistants"})
        form.add_field("file", b"alpha beta gamma", filename="notes.txt")
        async with session.post(f"{base}/v1/files", data=form) as response:
            file_id = (await response.json())["id"]
        async with session.delete(f"{base}/v1/files/{file_id}") as response:
            assert response.status == 200 and (await response.json())["deleted"] is True
        assert [name for name in loaded(await started.modules()) if name.startswith(RETRIEVAL)] == []
        async with session.post(f"{base}/v1/vector_stores", json={"name": "docs"}) as response:
            assert response.status == 200 and (await response.json())["object"] == "vector_store"
    assert [name for name in loaded(await started.modules()) if name.startswith(RETRIEVAL)] == sorted(RETRIEVAL)


def test_the_check_sees_an_import() -> None:
    """The checker itself: a loaded module or submodule of the list is found, a lookalike name is not."""
    assert loaded({"numpy.linalg", "yaml", "numpyish"}) == ["numpy", "yaml"]


async def test_the_test_fork_server_preloads_nothing_a_started_sidecar_has_not(started: Started) -> None:
    """tests/support/zygote.py forks the suite's sidecars from a process that imported its ``PRELOAD``: a module
    there that a started sidecar does not hold would be in every forked one, which the checks above (and any test
    of a sidecar's imports or memory) would then not see as a fresh one does. The fake upstream's modules
    (``demo``) are the one exception: its processes are forked from there too."""
    listed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", "import sys\nfrom tests.support.zygote import PRELOAD\nfor name in PRELOAD:\n"
         "    __import__(name)\nprint('\\n'.join(sys.modules))"], capture_output=True, text=True, check=True,
        timeout=120)
    preloaded = listed.stdout.split()
    idle = await started.modules()
    extra = sorted(set(preloaded) - idle - {"tests", "tests.support", "tests.support.zygote", "__main__"})
    assert "responses_bridge.demo.fake_server" in extra
    assert [name for name in extra if not name.startswith("responses_bridge.demo")] == []
