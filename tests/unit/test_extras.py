"""``pip install responses-bridge`` without extras: what needs one says which, in one line, and the rest runs.

Each check runs in a fresh interpreter whose imports of the extra's packages fail, as they would where the extra
is not installed (a meta-path finder refuses them; a second venv per extra would cost minutes here). The real
packages are installed in the test venv, which is what makes the blocker's absence matter: without it the very
same commands start.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from responses_bridge.demo.procs import free_port, wait_http

BLOCKER = textwrap.dedent("""
    import importlib.metadata
    import sys

    class Blocked:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Blocked())
    _distribution = importlib.metadata.distribution

    def distribution(name):  # their metadata is absent too: extras.py tells absent from installed-but-broken by it
        if name.lower().replace("_", "-").startswith(BLOCKED_DISTRIBUTIONS):
            raise importlib.metadata.PackageNotFoundError(name)
        return _distribution(name)

    importlib.metadata.distribution = distribution
""")

EXTRAS = {"postgres": ("asyncpg", "pgvector"), "otel": ("opentelemetry",),
          "retrieval": ("pypdf", "static_model")}
DISTRIBUTIONS = {"postgres": ("asyncpg", "pgvector"), "otel": ("opentelemetry-",),
                 "retrieval": ("pypdf", "tokenlearn-static-model")}


def run_blocked(extra: str, code: str, env: dict[str, str] | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
    program = (f"BLOCKED = {EXTRAS[extra]!r}\nBLOCKED_DISTRIBUTIONS = {DISTRIBUTIONS[extra]!r}\n{BLOCKER}\n"
               f"{textwrap.dedent(code)}")
    return subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, check=False)


def serve(tmp_path: Path) -> str:
    return f"""
        from responses_bridge.cli import main
        sys.exit(main(["serve", "--upstream", "http://127.0.0.1:9/v1", "--db", {str(tmp_path / 'b.db')!r},
                       "--http-port", "0", "--no-extproc"]))
    """


def test_a_database_url_without_the_postgres_extra_is_one_line(tmp_path: Path) -> None:
    result = run_blocked("postgres", serve(tmp_path),
                         {"RESPONSES_BRIDGE_DATABASE_URL": "postgresql://bridge:secret@127.0.0.1:9/bridge"})
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if "responses-bridge serve:" in line]
    assert len(lines) == 1 and "pip install 'responses-bridge[postgres]'" in lines[0], result.stderr
    assert "Traceback" not in result.stderr and "secret" not in result.stderr
    assert not (tmp_path / "b.db").exists()  # never SQLite instead


def test_tracing_configured_without_the_otel_extra_is_one_line(tmp_path: Path) -> None:
    result = run_blocked("otel", serve(tmp_path), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    assert result.returncode == 1, result.stderr
    assert "pip install 'responses-bridge[otel]'" in result.stderr and "Traceback" not in result.stderr


def test_without_the_otel_extra_tracing_is_off_and_nothing_imports_it() -> None:
    result = run_blocked("otel", """
        from responses_bridge.observability import tracing
        import responses_bridge.serve, responses_bridge.adapters.http.app, responses_bridge.adapters.extproc.server
        assert not tracing.configure_tracing({})
        with tracing.span("x", kind=tracing.SpanKind.CLIENT):
            pass
        assert tracing.extract({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}) is None
        print("ok")
    """)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_without_the_retrieval_extra_pdfs_and_embedding_say_which_extra(tmp_path: Path) -> None:
    pdf = tmp_path / "a.pdf"
    pdf.write_bytes(b"%PDF-1.4\n%%EOF\n")
    result = run_blocked("retrieval", f"""
        import asyncio
        from responses_bridge.config.settings import Settings
        from responses_bridge.protocol.errors import APIError
        from responses_bridge.services.files.retrieval.embedders import EmbeddingError, embedder_from_settings
        from responses_bridge.services.files.retrieval.extract import ExtractionError, extract_text
        try:
            extract_text(__import__("pathlib").Path({str(pdf)!r}), "a.pdf")
        except ExtractionError as error:
            print("pdf:", error.message)
        embedder = embedder_from_settings(Settings(upstream="http://127.0.0.1:9/v1"))
        try:
            embedder.name
        except APIError as error:
            print("name:", error.status, error.message)
        try:
            asyncio.run(embedder.embed(["x"]))
        except EmbeddingError as error:
            print("embed:", error)
    """)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert set(lines) == {"pdf", "name", "embed"}, result.stdout
    assert all("pip install 'responses-bridge[retrieval]'" in text for text in lines.values()), result.stdout
    assert lines["name"].startswith("400 ")


@pytest.mark.parametrize("extra", sorted(EXTRAS))
async def test_the_sidecar_starts_without_each_extra(extra: str, tmp_path: Path) -> None:
    """Nothing a plain start needs comes from an extra: the HTTP door answers /health without it."""
    port = free_port()
    program = (f"BLOCKED = {EXTRAS[extra]!r}\nBLOCKED_DISTRIBUTIONS = {DISTRIBUTIONS[extra]!r}\n{BLOCKER}\n"
               "from responses_bridge.cli import main\n"
               f"sys.exit(main(['serve', '--upstream', 'http://127.0.0.1:9/v1', '--db', {str(tmp_path / 'b.db')!r}, "
               f"'--http-port', '{port}', '--no-extproc']))")
    process = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        await wait_http(f"http://127.0.0.1:{port}/health", timeout=60)
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0].decode(errors="replace")
    assert "Traceback" not in output, output[-2000:]


def test_without_the_otel_extra_no_turn_is_kept_and_listing_traces_says_why() -> None:
    result = run_blocked("otel", """
        import asyncio
        from responses_bridge.observability import tracing
        from responses_bridge.protocol.errors import APIError
        from responses_bridge.services.agents.traces import SessionTraces
        assert not tracing.keeping_available()
        with tracing.keep("invoke_agent a", {}) as kept:
            assert kept is None
            with tracing.span("chat m") as span:
                assert span is None
        try:
            asyncio.run(SessionTraces(None).list_traces("sess_1", after=None, limit=20, order="desc", tenant=""))
        except APIError as error:
            print(error.status, error.param, error)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("400 session_id ") and "pip install 'responses-bridge[otel]'" in result.stdout
