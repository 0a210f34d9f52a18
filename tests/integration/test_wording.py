"""The words a user reads first say what happened, in their terms: an upstream that refuses connections is
``cannot connect to HOST:PORT: Connection refused`` (no ``ssl:default`` for an ``http://`` URL), the documented
commands run where only ``python3`` exists, and ``config check`` reports every problem of a file in one run, not
one layer per run. The real CLI, with a clean environment."""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

import pytest

from responses_bridge.demo.procs import free_port
from tests.support import zygote
from tests.support.bridge import PYTHON, log_lines
from tests.support.cli import clean_env, cli

pytestmark = pytest.mark.store_free  # a clean environment (tests/support/cli.py): none reads the store switch

ROOT = Path(__file__).resolve().parents[2]


async def test_an_unreachable_http_upstream_is_worded_without_ssl(tmp_path: Path) -> None:
    dead = free_port()
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        process = zygote.popen([PYTHON, "-m", "responses_bridge", "serve", "--no-extproc", "--db", ":memory:",
                                "--http-port", str(free_port()), "--upstream", f"http://127.0.0.1:{dead}/v1"],
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                               cwd=tmp_path, env=clean_env(tmp_path))
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while "upstream_unreachable" not in log_path.read_text():
            assert process.poll() is None, log_path.read_text()
            assert asyncio.get_running_loop().time() < deadline, log_path.read_text()
            await asyncio.sleep(0.05)
    finally:
        process.terminate()
        process.wait(timeout=30)
    [line] = [line for line in log_lines(log_path) if line["event"] == "upstream_unreachable"]
    assert line["error"] == f"cannot connect to 127.0.0.1:{dead}: Connection refused"


def test_the_documented_commands_use_python3() -> None:
    """Debian and Ubuntu have no ``python`` unless a package adds it; ``python3`` is there wherever Python is."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "envoy").glob("*.md"))]
    for page in pages:
        for line in shell_lines(page.read_text()):
            assert not re.search(r"(^|[\s|;&(])python -", line), (page.name, line)


def shell_lines(text: str) -> list[str]:
    """The lines of a page's shell blocks (fenced as bash, sh, shell, console, or with no language)."""
    lines, language = [], None
    for line in text.splitlines():
        if line.startswith("```"):
            language = line[3:].strip() if language is None else None
            continue
        if language in ("", "bash", "sh", "shell", "console"):
            lines.append(line)
    return lines


def test_config_check_reports_every_layer_at_once(tmp_path: Path) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text("http_prot: 8081\nhttp_port: abc\nworkers: zz\nupstreams:\n  - name: x\n    url: http://a/v1\n"
                    "models:\n  - match: m\n    upstream: y\n")
    result = cli(tmp_path, "config", "check", str(path))
    assert result.returncode == 1 and result.stdout == "", result
    assert result.stderr.splitlines() == [f"responses-bridge config check: {path}: {line}" for line in (
        "unknown setting 'http_prot'; did you mean http_port?",
        "http_port='abc': Input should be a valid integer, unable to parse string as an integer",
        "workers='zz': workers must be a whole number or 'auto', not 'zz'",
        "models[0].upstream: no upstream is named 'y'",
    )]


def test_config_check_reports_what_serve_would_refuse_and_warns_of_the_rest(tmp_path: Path) -> None:
    unrouted = tmp_path / "unrouted.yaml"
    unrouted.write_text("upstreams:\n  - {name: x, url: 'http://a/v1'}\nhttp_port: abc\n")
    result = cli(tmp_path, "config", "check", str(unrouted))
    assert result.returncode == 1
    assert result.stderr.splitlines()[1] == (
        f"responses-bridge config check: {unrouted}: no model is routed to the upstream 'x', so every request would "
        "be a 404 model_not_found: set default_upstream: x, or add models entries ({match: '*', upstream: x})")
    partial = tmp_path / "partial.yaml"
    partial.write_text("upstreams:\n  - {name: x, url: 'http://a/v1'}\n  - {name: z, url: 'http://b/v1'}\n"
                       "default_upstream: x\n")
    result = cli(tmp_path, "config", "check", str(partial))
    assert result.returncode == 0 and result.stdout == f"{partial}: valid\n", result
    assert result.stderr == (f"responses-bridge config check: warning: {partial}: no model is routed to the upstream "
                             "'z': no request reaches it\n")
