"""The sandbox's containment from outside, through the HTTP door with the real ``openai`` SDK and two tenants
(``RESPONSES_BRIDGE_AUTH=header``), in each mode: a cgroup per call (where this machine lets the bridge make one)
and the single-process mode (``RESPONSES_BRIDGE_CODE_CGROUP=false``). A 1,200-level tree with data at its bottom
leaves nothing on the host; one tenant's endless loops in every slot it may hold leave a slot for the other
tenant's ``print(1)``, which completes while those loops still run; ``doctor`` names the mode in force."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest

from responses_bridge.sandbox.cgroups.per_call import CgroupParent
from responses_bridge.sandbox.doctor import check_bubblewrap
from tests.integration.test_code_interpreter_e2e import AUTO, OUTPUTS, logs_of, run_code
from tests.integration.test_tenancy_containers import A, B, sdk
from tests.support.bridge import Sidecar, running_sidecar

# the sandbox is the subject, not the store (containers' write-back runs on both stores in
# tests/unit/test_containers_service.py): on SQLite files of its own, once (tests/conftest.py)
pytestmark = [pytest.mark.skipif(check_bubblewrap()[1] is not None, reason="bubblewrap cannot sandbox here"),
              pytest.mark.store_free]
MODES = ["single-process"] + (["cgroup"] if check_bubblewrap()[1] is None and CgroupParent.find() else [])


@pytest.fixture(scope="module")
def host_temp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bridge's temporary directory on the host (its TMPDIR: everything it writes outside the sandbox with
    Python's ``tempfile`` goes there), its own so that what other processes of the machine write to theirs meanwhile
    (other tests, on other workers) is not taken for its leftovers."""
    return tmp_path_factory.mktemp("host-temp")


@pytest.fixture(scope="module", params=MODES)
async def bridge(request: pytest.FixtureRequest, fake_upstream: str, host_temp: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sidecar]:
    env = {"RESPONSES_BRIDGE_AUTH": "header", "RESPONSES_BRIDGE_CODE_CONCURRENCY": "2",
           "RESPONSES_BRIDGE_CODE_TIMEOUT": "20", "RESPONSES_BRIDGE_CODE_CGROUP": str(request.param == "cgroup"),
           "TMPDIR": str(host_temp)}
    async with running_sidecar(str(tmp_path_factory.mktemp("containment")), fake_upstream, env=env, extproc=False,
                               ready_headers={"x-tenant-id": A}, own_sqlite=True) as sidecar:
        yield sidecar


async def ask(client: openai.AsyncOpenAI, code: str) -> Any:
    return await client.responses.create(model="fake-model", input=run_code(code), tools=[AUTO],
                                         include=OUTPUTS)  # type: ignore[arg-type]


async def test_a_deep_tree_with_data_at_its_bottom_leaves_nothing_on_the_host(bridge: Sidecar, host_temp: Path) -> None:
    temp = set(os.listdir(host_temp))
    code = ("import os\nfor _ in range(1200):\n    os.mkdir('d'); os.chdir('d')\n"
            "open('data', 'wb').write(b'x' * (50 << 20))\nprint('built')")
    async with sdk(bridge, A) as client:
        response = await ask(client, code)
    call = response.output[0]
    assert call.type == "code_interpreter_call" and "built" in logs_of(call)
    await asyncio.sleep(1)
    assert set(os.listdir(host_temp)) - temp == set()
    assert bridge.process.process.poll() is None


async def test_one_tenant_s_loops_leave_a_slot_for_another_s_first_call(bridge: Sidecar) -> None:
    async with sdk(bridge, A) as a, sdk(bridge, B) as b:
        loops = [asyncio.create_task(ask(a, "while True:\n    pass")) for _ in range(3)]
        await asyncio.sleep(1.0)
        response = await ask(b, "print(1)")
        assert logs_of(response.output[0]).strip() == "1"
        assert not any(loop.done() for loop in loops)  # b's call did not wait for one of a's to end
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)


def test_doctor_names_the_mode_in_force() -> None:
    for use, mode in (("false", "single-process mode"), ("true", "cgroup mode" if "cgroup" in MODES else
                                                          "single-process mode")):
        for require_shell in ([], ["--require-shell"]):
            done = subprocess.run([sys.executable, "-m", "responses_bridge", "doctor", *require_shell],
                                  capture_output=True, text=True, check=False,
                                  env={"PATH": os.environ["PATH"], "RESPONSES_BRIDGE_CODE_CGROUP": use})
            # code runs in either mode: exit 0; a deployment offering the shell asks --require-shell, which fails
            # where shell commands cannot run (whatever the reason: the host's or the setting's)
            wanted = 1 if require_shell and mode != "cgroup mode" else 0
            assert done.returncode == wanted and mode in done.stdout, done.stdout + done.stderr
            assert "code interpreter: code runs in the sandbox here" in done.stdout
            shell = "shell commands run in the sandbox here" if mode == "cgroup mode" else "cannot run here"
            assert f"hosted shell: {shell}" in done.stdout
    refused = subprocess.run([sys.executable, "-m", "responses_bridge", "doctor"], capture_output=True, text=True,
                             env={"PATH": os.environ["PATH"], "RESPONSES_BRIDGE_CODE_CGROUP": "false",
                                  "RESPONSES_BRIDGE_CODE_REQUIRE_CGROUP": "true"}, check=False)
    assert refused.returncode == 1 and "REQUIRE_CGROUP" in refused.stdout
