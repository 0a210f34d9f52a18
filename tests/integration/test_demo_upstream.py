"""``responses-bridge demo --upstream URL`` as a new user runs it (its own process, a real Envoy): a dead upstream
is said plainly instead of "ready", and against a keyless backend the printed examples name its real model and run
as printed without ``OPENAI_API_KEY``."""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from responses_bridge.demo.procs import free_port
from tests.support.envoy import have_envoy

pytestmark = [pytest.mark.envoy, pytest.mark.skipif(not have_envoy(), reason="envoy binary not available"),
              pytest.mark.store_free]

BANNER_END = "Press Ctrl-C to stop."


def keyless_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items()
            if not key.startswith("RESPONSES_BRIDGE_") and key not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}


@asynccontextmanager
async def demo(*args: str) -> AsyncIterator[dict[str, str]]:
    """The demo, running once its banner is printed: ``out`` is its stdout so far; stopped with Ctrl-C (SIGINT)
    on exit, after which ``err`` holds its stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "responses_bridge", "demo", "--port", str(free_port()), *args, env=keyless_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
    assert process.stdout is not None and process.stderr is not None
    out: list[str] = []
    try:
        async with asyncio.timeout(120):
            while not out or out[-1].strip() != BANNER_END:
                line = (await process.stdout.readline()).decode()
                assert line, "the demo ended before its banner: " + "".join(out)
                out.append(line)
        result = {"out": "".join(out), "err": ""}
        yield result
        process.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(process.communicate(), 60)
        result["err"] = err.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_a_dead_upstream_is_said_plainly_and_the_examples_name_the_given_model() -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    async with demo("--upstream", dead, "--model", "llama3.2") as result:
        pass
    out, err = result["out"], result["err"]
    assert f"demo: the upstream {dead} is unreachable" in err
    assert "is ready" not in out
    assert f"responses-bridge demo is running, but its upstream {dead} is unreachable" in out
    assert '"model":"llama3.2"' in out and "MODEL" not in out
    assert "Authorization" not in out  # no OPENAI_API_KEY here: a keyless backend gets no header
    assert 'os.environ.get("OPENAI_API_KEY", "none")' in out


async def test_against_a_keyless_backend_the_printed_examples_run_as_printed(fake_upstream: str) -> None:
    async with demo("--upstream", fake_upstream) as result:
        out = result["out"]
        lines = out.splitlines()
        assert "responses-bridge demo is ready." in lines, out
        assert '"model":"fake-model"' in out  # the first model the upstream lists
        sdk = lines[lines.index("With the OpenAI SDK (Python):") + 1].strip()
        curl = next(line.strip() for line in lines if line.strip().startswith("curl -s "))
        ran = await asyncio.to_thread(subprocess.run, shlex.split(sdk), capture_output=True, text=True, timeout=60,
                                      env=keyless_env())
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.strip() == "Echo: Hi!"
        fetched = await asyncio.to_thread(subprocess.run, ["bash", "-c", curl], capture_output=True, text=True,
                                          timeout=60, env=keyless_env())
        assert fetched.returncode == 0 and '"status":"completed"' in fetched.stdout.replace(" ", ""), fetched
    assert "unreachable" not in result["err"]
