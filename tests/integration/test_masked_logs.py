"""A credential given in a URL, by any flag or variable, never reaches the sidecar's log: the real CLI with a clean
environment, its upstream and its own-calls URL given with passwords, run until its start check has logged."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from responses_bridge.demo.procs import free_port
from tests.support import zygote
from tests.support.bridge import PYTHON
from tests.support.cli import clean_env

pytestmark = pytest.mark.store_free  # a clean environment (tests/support/cli.py): none reads the store switch


async def test_urls_with_passwords_are_logged_masked(tmp_path: Path) -> None:
    log_path = tmp_path / "serve.log"
    dead = free_port()
    with open(log_path, "wb") as log:
        process = zygote.popen(
            [PYTHON, "-m", "responses_bridge", "serve", "--no-extproc", "--db", str(tmp_path / "state.db"),
             "--http-port", str(free_port()), "--upstream", f"http://model:upstr3amPW@127.0.0.1:{dead}/v1",
             "--log-level", "debug"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env=clean_env(tmp_path, RESPONSES_BRIDGE_UPSTREAM_VIA=f"http://envoy:v1aPW@127.0.0.1:{dead}/v1"))
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while "upstream_unreachable" not in log_path.read_text():
            assert process.poll() is None, log_path.read_text()
            assert asyncio.get_running_loop().time() < deadline, log_path.read_text()
            await asyncio.sleep(0.05)
    finally:
        process.terminate()
        process.wait(timeout=30)
    text = log_path.read_text()
    assert '"event": "serving"' in text and f"http://model:********@127.0.0.1:{dead}/v1" in text
    assert "upstr3amPW" not in text and "v1aPW" not in text, text
