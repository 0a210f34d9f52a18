"""Programs and the memory budget, through a real sidecar with ``auth: keys`` and two tenants on a 256 MiB budget (what
a 512 MiB container gets): programs run there, their bound derived from a tenant's share; a bound set above the share
stops ``serve`` naming both settings; what programs answer (their tool calls' arguments) is held in the budget while
the response keeps it, so the sidecar grows by no more than the budget; and a ``program`` item is its tenant's: another
tenant resuming it gets the 400 of a forged one.

The sidecar is on a SQLite file of its own (programs, the budget and the keys are the process's), so the PostgreSQL
pass of scripts/test leaves the module out."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.test_program_containment import make_keys
from tests.support.bridge import Sidecar, budget_held_bytes, running_sidecar
from tests.support.cli import cli, one_line
from tests.support.memory import reset_peak, status_kb
from tests.support.schema import validate_response

pytest.importorskip("py_mini_racer")
pytestmark = pytest.mark.store_free

MODEL = "fake-model"
KEY = base64.urlsafe_b64encode(b"m" * 32).decode()
BUDGET = 256 << 20
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
           "allowed_callers": ["programmatic"]}
TOOLS = [{"type": "programmatic_tool_calling"}, WEATHER]
CALLS = 4
WIDE = ('js: const big = "x".repeat(1 << 19); const r = await Promise.all(Array.from({length: ' + str(CALLS)
        + '}, (_, i) => tools.get_weather({city: big + i}))); return r.length')
"""A program that waits for 4 client calls at once, each with 512 KiB of arguments (what its 64 MiB allow)."""


@dataclass
class Stack:
    sidecar: Sidecar
    keys: dict[str, str]


@pytest.fixture(scope="module")
async def stack(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    tmp = tmp_path_factory.mktemp("program-memory")
    db = tmp / "bridge.db"
    keys = await make_keys(db, "acme", "beta")
    async with running_sidecar(str(tmp), fake_upstream, "--db", str(db), extproc=False,
                               env={"RESPONSES_BRIDGE_AUTH": "keys", "RESPONSES_BRIDGE_SEALING_KEY": KEY,
                                    "RESPONSES_BRIDGE_MEMORY_BUDGET_BYTES": str(BUDGET)},
                               own_sqlite=True) as sidecar:
        yield Stack(sidecar, keys)


async def post(stack: Stack, tenant: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=180)) as session:
        async with session.post(f"{stack.sidecar.http_url}/v1/responses",
                                headers={"Authorization": f"Bearer {stack.keys[tenant]}"},
                                json={"model": MODEL, "tools": TOOLS, "store": False, **body}) as response:
            answer = await response.json(content_type=None)
            if response.status == 200:
                validate_response(answer)
            return response.status, answer


async def post_retrying(stack: Stack, tenant: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """:func:`post`, retried as a client retries a 503 ``preempted_for_fairness`` (retryable; only the memory
    backstop answers it now — the slots take nothing back for another tenant: fairness/share.py)."""
    for _ in range(4):
        status, answer = await post(stack, tenant, body)
        if status != 503 or answer.get("error", {}).get("code") != "preempted_for_fairness":
            break
    return status, answer


async def budget_held(stack: Stack) -> int:
    return await budget_held_bytes(stack.sidecar.http_url)


def program_output(body: dict[str, Any]) -> dict[str, Any]:
    return next(item for item in body["output"] if item["type"] == "program_output")


async def test_programs_run_on_a_256_mib_budget(stack: Stack) -> None:
    """Before, the bound (256 MiB) was past a tenant's share (128 MiB): every program ended incomplete, "no room
    for its memory bound"; now the bound is derived from the share and the program runs."""
    status, body = await post(stack, "acme", {"input": "js: return 'ran ' + (6 * 7)"})
    assert status == 200, body
    output = program_output(body)
    assert (output["status"], output["result"]) == ("completed", "ran 42"), output


def test_a_program_bound_above_a_tenants_share_stops_serve_naming_both_settings(tmp_path: Path) -> None:
    result = cli(tmp_path, "serve", "--upstream", "http://127.0.0.1:9/v1",
                 env={"RESPONSES_BRIDGE_MEMORY_BUDGET_BYTES": str(BUDGET),
                      "RESPONSES_BRIDGE_PROGRAM_MEMORY_BYTES": str(256 << 20)})
    line = one_line(result, "serve")
    for named in ("RESPONSES_BRIDGE_PROGRAM_MEMORY_BYTES", "RESPONSES_BRIDGE_MEMORY_BUDGET_BYTES",
                  "RESPONSES_BRIDGE_MEMORY_BUDGET_SHARE", "128 MiB"):
        assert named in line, line


async def test_another_tenants_program_item_is_refused_as_a_forged_one(stack: Stack) -> None:
    """Tenant beta sends back tenant acme's program item as it was returned (stateless): before, it ran in acme's
    world (its pinned clock and seed); now it is the 400 a forged item gets, word for word, and acme's own resume
    still runs."""
    user = {"role": "user", "content": 'js: const r = await tools.get_weather({city: "Oslo"}); return "it is " + r'}
    status, first = await post(stack, "acme", {"input": [user]})
    assert status == 200, first
    program, call = first["output"]
    assert (program["type"], call["type"]) == ("program", "function_call")
    answer = {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}
    forged = dict(program, fingerprint=program["fingerprint"][:-1] + ("1" if program["fingerprint"][-1] == "0"
                                                                       else "0"))
    refusals = []
    for tenant, item in (("beta", program), ("acme", forged)):
        status, body = await post(stack, tenant, {"input": [user, item, call, answer]})
        assert status == 400, body
        refusals.append(body["error"])
    assert refusals[0] == refusals[1], refusals
    assert (refusals[0]["code"], refusals[0]["param"]) == ("invalid_program_fingerprint", "input[1].fingerprint")
    status, resumed = await post(stack, "acme", {"input": [user, program, call, answer]})
    assert status == 200, resumed
    assert (program_output(resumed)["status"], program_output(resumed)["result"]) == ("completed", "it is sunny")


async def test_programs_arguments_are_held_in_the_budget_and_the_sidecar_stays_within_it(stack: Stack) -> None:
    """Eight requests at once from two tenants, each a program waiting for 4 client calls of 512 KiB of arguments:
    each answer is held in the budget while its response keeps it, so a program either comes back with its calls
    or ends incomplete naming the budget, the sidecar grows by less than the budget, and once the responses are let
    go the budget holds nothing."""
    pid = stack.sidecar.process.pid
    await post(stack, "acme", {"input": "js: return 1"})  # the workers' first start is not what is measured
    before = reset_peak(pid)
    answers = await asyncio.gather(*(post_retrying(stack, ("acme", "beta")[index % 2], {"input": WIDE})
                                     for index in range(8)))
    grown_mib = (status_kb(pid, "VmHWM") - before) / 1024
    suspended = 0
    for status, body in answers:
        assert status == 200, body
        calls = [item for item in body["output"] if item["type"] == "function_call"]
        if calls:
            assert len(calls) == CALLS and all(len(call["arguments"]) > 1 << 19 for call in calls)
            suspended += 1
        else:
            output = program_output(body)
            assert output["status"] == "incomplete" and "memory budget" in output["result"], output
    print(f"{suspended} of 8 programs came back with their calls; the sidecar grew {grown_mib:.0f} MiB on a "
          f"{BUDGET >> 20} MiB budget")
    assert suspended >= 2  # each tenant's first at least
    assert grown_mib < (BUDGET >> 20) + 64, grown_mib
    assert await budget_held(stack) == 0
