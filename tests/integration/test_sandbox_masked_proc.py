"""The sandbox where users deploy it: under Docker's and containerd's default /proc masks (made here as the issue
did, in a private mount namespace, as root), ``serve`` proves the sandbox at start, warns once that calls run
without a /proc of their own (naming the fix), and the code interpreter and the hosted shell both run, through the
real ``openai`` SDK on the HTTP door."""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import orjson
import pytest

from responses_bridge.sandbox.cgroups.per_call import CgroupParent
from responses_bridge.sandbox.doctor import check_bubblewrap
from tests.support.bridge import Sidecar, log_lines, running_sidecar
from tests.support.sdk import async_sdk
from tests.unit.test_sandbox_identity import MASKS

pytestmark = [pytest.mark.skipif(check_bubblewrap()[1] is not None, reason="bubblewrap cannot sandbox here"),
              pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                 reason="the /proc masks are made in a mount namespace, as root")]
pytestmark = [*pytestmark, pytest.mark.store_proven(
    "tests/integration/test_replicas_code.py",
    "tests/integration/test_agents_automations_replicas.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)]


@pytest.fixture(scope="module")
async def masked(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Sidecar, Path]]:
    directory = tmp_path_factory.mktemp("masked")
    log = directory / "sidecar.log"
    async with running_sidecar(str(directory), fake_upstream, extproc=False, log_file=log,
                               env={"RESPONSES_BRIDGE_LOG_FORMAT": "json", "RESPONSES_BRIDGE_CODE_TIMEOUT": "10"},
                               wrap=["unshare", "-m", "sh", "-c", MASKS, "masked"]) as sidecar:
        yield sidecar, log


@pytest.fixture
async def client(masked: tuple[Sidecar, Path]) -> AsyncIterator[openai.AsyncOpenAI]:
    async with async_sdk(base_url=f"{masked[0].http_url}/v1", api_key="sk-client", max_retries=0,
                                  timeout=60) as sdk:
        yield sdk


def _action(tool: str, **action: object) -> str:
    return f"call {tool} [args64={base64.b64encode(orjson.dumps(action)).decode()}]"


async def test_serve_warns_once_naming_the_fix_and_still_proves_the_sandbox(masked: tuple[Sidecar, Path]) -> None:
    events = log_lines(masked[1])
    warned = [event for event in events if event.get("event") == "sandbox_without_proc"]
    assert len(warned) == 1 and "Can't mount proc" in warned[0]["cause"]
    assert "systempaths=unconfined" in warned[0]["fix"] and "procMount: Unmasked" in warned[0]["fix"]
    [ready] = [event for event in events if event.get("event") == "sandbox_ready"]
    assert ready["proc"] is False and ready["host_uid"] == 65534
    assert not any(event.get("event") == "sandbox_unavailable" for event in events)


async def test_the_code_interpreter_runs_without_a_proc(client: openai.AsyncOpenAI) -> None:
    code = "import os\nprint('proc:', os.path.exists('/proc/self'), sum(range(10)))"
    response = await client.responses.create(model="fake-model", input=_action("python", code=code),
                                             tools=[{"type": "code_interpreter", "container": {"type": "auto"}}],
                                             include=["code_interpreter_call.outputs"])
    call = next(item for item in response.output if item.type == "code_interpreter_call")
    assert call.status == "completed", call
    logs = "".join(output.logs for output in call.outputs or () if output.type == "logs")
    assert "proc: False 45" in logs


@pytest.mark.skipif(CgroupParent.find() is None, reason="no cgroup per call here: the shell is refused")
async def test_the_hosted_shell_runs_without_a_proc(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(
        model="fake-model", input="sh: ls /proc | wc -l; echo done", tools=[
            {"type": "shell", "environment": {"type": "container_auto"}}])  # type: ignore[list-item]
    output = next(item for item in response.output if item.type == "shell_call_output")
    [command] = output.output
    assert command.outcome.type == "exit" and command.outcome.exit_code == 0, command
    assert command.stdout.split() == ["0", "done"]
