"""A victim tenant beside 2, 4, 8 and 16 greedy tenants arriving together and one after another, for the pools
test_fair_preemption.py does not reach: the program slots, the sandbox slots and the egress connections
(fairness/share.py's one rule), end to end through a real sidecar's HTTP door with tenants told apart by
``x-tenant-id`` (``auth: header``).

* Sandbox slots (``RESPONSES_BRIDGE_CODE_CONCURRENCY=8``, a tenant alone holds 7): each greedy tenant keeps four
  calls sleeping :data:`SANDBOX_SLEEP` s in the sandbox, resubmitted as they end, until every slot is busy; the
  victim's calls are then answered. The rule that only admitted kept a part of the slots free and, once they
  were full, served a newcomer behind the greedy tenants' queue; the rule after it took a greedy call back for each
  of the victim's (HTTP 503 ``preempted_for_fairness``: its work thrown away); the rule after it took nothing back
  and let them fill all 8. Now nothing is taken back and the slots keep their headroom (fairness/headroom.py):
  beside 2 greedy tenants whose calls outlast the test (:data:`SANDBOX_LONG`) they hold the 4 above it and the
  victim is served from it at once; beside 16 (past its floors) a freed slot goes to the waiting tenant served
  least lately — the victim — and every greedy call ends by itself. Beside
  16 (64 calls for 8 slots and a queue of 32) the queue also gives up greedy tenants' own excess: a call of the
  tenant holding and waiting most fails saying the queue is full (:data:`OWN_QUEUE_REFUSED`, its exact note), never
  the victim's.
* Egress connections (``RESPONSES_BRIDGE_CODE_EGRESS_BRIDGE_CONNECTIONS=8``, a tenant alone holds 4): each greedy
  tenant's call holds as many connections as it is given to a server that never answers. With the old rule four
  greedy tenants filled the 8 and every one of the victim's connections was refused ``bridge_connection_limit``
  (0 of 10); now a greedy connection is closed for each of the victim's (the proxy's connections are accepted
  before they are admitted and cannot wait: the one pool that still takes back for a tenant under its ``C / n``),
  and its ten calls' connections are answered — with every greedy call at once, or each started once the one
  before holds its connections.
* Program slots (``RESPONSES_BRIDGE_PROGRAM_SLOTS=4``): each greedy tenant keeps three ``while (true) {}`` programs
  running, resubmitted as they end by their time bound (5 s). Every victim program completes — a freed slot goes to
  it first, served least — and a greedy program ends by its bound, nothing else; beside 16 (48 programs for 4
  slots and a queue of 16) the full queue gives up greedy tenants' own excess, answered at once saying so
  (:data:`PROGRAM_QUEUE_REFUSED`), which such a tenant posts again after a pause.

The sidecars keep their own SQLite files: the pools are the process's, whatever the store (``store_free``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from textwrap import dedent
from typing import Any

import aiohttp
import orjson
import pytest

from responses_bridge.run.programs.host import no_slot_note
from responses_bridge.sandbox.doctor import check_bubblewrap
from responses_bridge.sandbox.slots import busy_note
from tests.integration.test_code_interpreter_e2e import AUTO, OUTPUTS, run_code
from tests.integration.test_egress_fairness import ALLOW, Hosts, through_socket
from tests.support.bridge import Sidecar, running_sidecar

pytestmark = pytest.mark.store_free

MODEL = "fake-model"
VICTIM = "victim"
VICTIM_CALLS = 10  # the egress test's
SLOT_CALLS = 5  # the victim's calls in the sandbox and program slots' tests, one after another
SANDBOX_SLOTS = 8  # as many as 8 greedy tenants: each then holds one, more than its C / n (16: half hold none)
SANDBOX_TIMEOUT = 60
SANDBOX_SLEEP = 2  # a greedy call's time in the sandbox beside 16 (past the headroom's floors): it ends by itself
SANDBOX_LONG = 600  # beside 2: a greedy call that outlasts the test (the headroom serves the victim meanwhile)
PROGRAM_SLOTS = 4
PROGRAM_QUEUE = 4 * PROGRAM_SLOTS  # FairSlots' own bound
PROGRAM_TOOLS = [{"type": "programmatic_tool_calling"}]
needs_sandbox = pytest.mark.skipif(check_bubblewrap()[1] is not None, reason="bubblewrap cannot sandbox here")


@dataclass
class Greedy:
    """One greedy tenant's requests: each of ``workers`` loops posts again as soon as its last one ended."""

    tenant: str
    ended: list[str] = field(default_factory=list)  # how each ended: "200" or "503:<code>"
    ended_before_victim: list[str] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


async def post(url: str, tenant: str, body: dict[str, Any], timeout: float = 180) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session, session.post(
            f"{url}/v1/responses", json={"model": MODEL, **body}, headers={"x-tenant-id": tenant}) as reply:
        return reply.status, await reply.json(content_type=None)


def outcome(status: int, answer: dict[str, Any]) -> str:
    """``200``; ``200:failed:<reason>`` for a response failed after its JSON answer committed to 200 (a request
    waiting past the keep-alive threshold: its reason leads the error's message); ``<status>:<code>``."""
    if status == 200 and answer.get("status") == "failed":
        return f"200:failed:{str((answer.get('error') or {}).get('message')).split(':')[0]}"
    return "200" if status == 200 else f"{status}:{(answer.get('error') or {}).get('code')}"




Outcome = Callable[[int, dict[str, Any]], str]


async def _greedy_loop(url: str, greedy: Greedy, body: dict[str, Any], victim_done: asyncio.Event,
                       classify: Outcome) -> None:
    while True:
        status, answer = await post(url, greedy.tenant, body)
        ended = classify(status, answer)
        greedy.ended.append(ended)
        if not victim_done.is_set():
            greedy.ended_before_victim.append(ended)
        if ended in REFUSED_AT_ONCE:  # a pause, or a storm of refusals takes the test's CPU (and the sidecar's)
            await asyncio.sleep(REFUSED_PAUSE)


@contextlib.asynccontextmanager
async def greedy_tenants(url: str, count: int, workers: int, body: dict[str, Any], victim_done: asyncio.Event, *,
                         together: bool = True, classify: Outcome = outcome,
                         settled: Callable[[int], Awaitable[None]] | None = None) -> AsyncIterator[list[Greedy]]:
    """``count`` greedy tenants of ``workers`` loops each, arriving at once or one after another (so that each takes
    what it is given before the next comes: ``settled(k)`` returns once the first ``k`` have, half a second after
    each otherwise); ``classify`` names how each request ended."""
    tenants = [Greedy(f"greedy{at}") for at in range(count)]
    for arrived, greedy in enumerate(tenants, 1):
        greedy.tasks = [asyncio.create_task(_greedy_loop(url, greedy, body, victim_done, classify))
                        for _ in range(workers)]
        if not together:
            await (settled(arrived) if settled is not None else asyncio.sleep(0.5))
    try:
        yield tenants
    finally:
        for greedy in tenants:
            for task in greedy.tasks:
                task.cancel()
            await asyncio.gather(*greedy.tasks, return_exceptions=True)


async def _until(condition: Any, what: str, tries: int = 600) -> None:
    """Bounded polling (not a timing check)."""
    for _ in range(tries):
        if condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"never: {what}")


# -- sandbox and program slots: one sidecar -------------------------------------------------------------------------

@pytest.fixture(scope="module")
async def slots_sidecar(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sidecar]:
    env = {"RESPONSES_BRIDGE_AUTH": "header", "RESPONSES_BRIDGE_CODE_CONCURRENCY": str(SANDBOX_SLOTS),
           "RESPONSES_BRIDGE_CODE_TIMEOUT": str(SANDBOX_TIMEOUT), "RESPONSES_BRIDGE_PROGRAM_SLOTS": str(PROGRAM_SLOTS),
           "RESPONSES_BRIDGE_PROGRAM_MEMORY_BYTES": str(64 << 20)}
    async with running_sidecar(str(tmp_path_factory.mktemp("fair-slots")), fake_upstream, env=env, extproc=False,
                               ready_headers={"x-tenant-id": VICTIM}, own_sqlite=True) as sidecar:
        yield sidecar


async def _until_gauges(url: str, at_least: dict[str, float]) -> None:
    """Until each of the sidecar's gauges is at least its figure, read together from its /metrics: bounded polling
    (not a timing check)."""
    for _ in range(600):
        async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as reply:
            lines = (await reply.text()).splitlines()
        if all(sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(name)) >= figure
               for name, figure in at_least.items()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {at_least}")


async def _until_programs_queued(url: str, programs: int) -> None:
    """Until ``programs`` are running (as many as there are slots) or waiting (as many as the queue takes). A fixed
    pause was waited before (a second before the victim came, half a second after each greedy tenant), endless
    programs running meanwhile."""
    # running or waiting: how many run is the rule's (beside others, the slots' headroom stays for a tenant holding
    # none: fairness/headroom.py), as endless programs end by their bound and are posted again
    wanted = min(programs, PROGRAM_SLOTS + PROGRAM_QUEUE)
    for _ in range(600):
        async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as reply:
            lines = (await reply.text()).splitlines()
        figures = {name: sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(name))
                   for name in ("responses_bridge_programs_live", "responses_bridge_programs_waiting")}
        if figures["responses_bridge_programs_live"] >= 1 and sum(figures.values()) >= wanted:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never {wanted} programs running or waiting")


def _code_call(answer: dict[str, Any]) -> dict[str, Any]:
    return next(item for item in answer["output"] if item["type"] == "code_interpreter_call")


def _logs(call: dict[str, Any]) -> str:
    return "".join(out["logs"] for out in call.get("outputs") or () if out["type"] == "logs")


# a greedy tenant's own excess refused by the sandbox slots' bounded queue (4 x 8 waiting runs): with 16 greedy
# tenants of four calls each the queue fills, and the waiter given up is always one of the tenant holding and
# waiting the most (fairness/share.py) — its response completes, its code_interpreter_call failed with this note
OWN_QUEUE_REFUSED = "200:code_interpreter_call:failed:sandbox_queue_full"
REFUSED_PAUSE = 0.5  # the queue stays full: 56 calls want its 32 places
QUEUE_NOTE = busy_note("queue", SANDBOX_SLOTS, SANDBOX_TIMEOUT)


# a greedy tenant's program given up by the program slots' full queue (4 x 4 waiting) beside 16 greedy tenants
# of three programs each: answered at once, its program_output incomplete with this note (run/programs/host.py)
PROGRAM_QUEUE_REFUSED = "200:program_output:incomplete:queue_full"
PROGRAM_QUEUE_NOTE = no_slot_note("queue", PROGRAM_SLOTS, 0)  # the queue's note names no wait
REFUSED_AT_ONCE = {OWN_QUEUE_REFUSED, PROGRAM_QUEUE_REFUSED}


def program_outcome(status: int, answer: dict[str, Any]) -> str:
    """:func:`outcome`, and :data:`PROGRAM_QUEUE_REFUSED` for a program the full queue gave up (its exact note)."""
    if status == 200:
        program = next((item for item in answer.get("output") or () if item["type"] == "program_output"), {})
        if program.get("status") == "incomplete" and program.get("result") == PROGRAM_QUEUE_NOTE:
            return PROGRAM_QUEUE_REFUSED
    return outcome(status, answer)


def sandbox_outcome(status: int, answer: dict[str, Any]) -> str:
    """:func:`outcome`, and :data:`OWN_QUEUE_REFUSED` for a call refused by the queue (its exact note; any other
    failed call stays ``200``, as a call that ran to its time limit)."""
    if status == 200 and answer.get("status") == "completed":
        call = next((item for item in answer.get("output") or () if item["type"] == "code_interpreter_call"), {})
        if call.get("status") == "failed" and _logs(call).strip() == QUEUE_NOTE:
            return OWN_QUEUE_REFUSED
    return outcome(status, answer)


# few greedy tenants arriving at once, and as many as fill the queue arriving one after another (8 together: the
# same rule as 2, at a quarter of the suite's minutes for the two pools)
ARRIVALS = pytest.mark.parametrize(
    ("greedy", "together"), [(2, True), (16, False)], ids=["2-together", "16-one-after-another"])
# program slots (4) beside four times as many greedy tenants too: each wait is one program's time bound at the most
PROGRAM_ARRIVALS = ARRIVALS


@needs_sandbox
@ARRIVALS
async def test_sandbox_slots_a_victim_is_answered_as_alone_beside_greedy_tenants(
        slots_sidecar: Sidecar, greedy: int, together: bool) -> None:
    url = slots_sidecar.http_url
    # beside 2 the greedy calls outlast the test: they hold the 4 slots above the headroom (fairness/headroom.py:
    # half of 8 kept, a floor of one for a tenant holding none), and the victim is served from it at once; beside 16
    # (more fresh tenants than the headroom's floors: every slot taken, the first's 4 and four floors) the queue's
    # backstop serves it as greedy calls end
    within_bound = greedy < SANDBOX_SLOTS // 2
    sleep = SANDBOX_LONG if within_bound else SANDBOX_SLEEP
    sleeper = {"input": run_code(f"import time\ntime.sleep({sleep})"), "tools": [AUTO], "include": OUTPUTS}
    victim_done = asyncio.Event()
    outcomes = []
    async with greedy_tenants(url, greedy, SANDBOX_SLOTS // 2, sleeper, victim_done, together=together,
                              classify=sandbox_outcome) as tenants:
        await _until_gauges(url, {"responses_bridge_sandboxes_live": SANDBOX_SLOTS // 2 if within_bound
                                  else SANDBOX_SLOTS})  # what the greedy tenants may take, all of it taken
        for at in range(SLOT_CALLS):
            status, answer = await post(url, VICTIM, {"input": run_code(f"print({at})"), "tools": [AUTO],
                                                      "include": OUTPUTS})
            call = _code_call(answer) if status == 200 else {}
            outcomes.append("completed" if call.get("status") == "completed" and _logs(call).strip() == str(at)
                            else sandbox_outcome(status, answer))
        victim_done.set()
    assert outcomes == ["completed"] * SLOT_CALLS, outcomes
    ended = [one for tenant in tenants for one in tenant.ended_before_victim]
    if within_bound:  # nothing of theirs ended while the victim was served (before: taken back for it)
        assert ended == [], ended
        return
    # the greedy calls end by themselves (before: taken back for the victim); beside 16 the queue gives up their
    # own excess too
    assert "200" in ended and set(ended) <= {"200", OWN_QUEUE_REFUSED}, ended


@PROGRAM_ARRIVALS
async def test_program_slots_a_victim_is_answered_as_alone_beside_greedy_tenants(
        slots_sidecar: Sidecar, greedy: int, together: bool) -> None:
    pytest.importorskip("py_mini_racer")
    url = slots_sidecar.http_url
    endless = {"input": "js: while (true) {}", "tools": PROGRAM_TOOLS, "store": False}
    victim_done = asyncio.Event()
    outcomes: list[str] = []
    async def settled(arrived: int) -> None:  # its programs running or queued, while the queue has room for them
        if 3 * arrived <= PROGRAM_SLOTS + PROGRAM_QUEUE:
            await _until_programs_queued(url, 3 * arrived)
        else:  # past it, each of its programs gives up another tenant's waiter: no gauge tells that one apart
            await asyncio.sleep(0.5)

    async with greedy_tenants(url, greedy, 3, endless, victim_done, together=together, settled=settled,
                              classify=program_outcome) as tenants:
        await _until_programs_queued(url, 3 * greedy)  # the greedy tenants' programs hold the slots and queue
        for at in range(SLOT_CALLS):
            status, answer = await post(url, VICTIM, {"input": f"js: return 'mine {at}'", "tools": PROGRAM_TOOLS,
                                                      "store": False})
            program = next((item for item in answer.get("output") or () if item["type"] == "program_output"), {})
            outcomes.append("completed" if program.get("status") == "completed"
                            and program.get("result") == f"mine {at}" else f"{outcome(status, answer)}:{program}")
        victim_done.set()
    assert outcomes == ["completed"] * SLOT_CALLS, outcomes
    ended = [one for tenant in tenants for one in tenant.ended]
    assert set(ended) <= {"200", PROGRAM_QUEUE_REFUSED}, ended  # by its bound, or given up (before: taken back too)
    assert (PROGRAM_QUEUE_REFUSED in ended) == (3 * greedy > PROGRAM_SLOTS + PROGRAM_QUEUE), ended  # only past it


# -- egress connections -----------------------------------------------------------------------------------------------

EGRESS_CAP = 8


@dataclass
class EgressStack:
    sidecar: Sidecar
    hosts: Hosts


@pytest.fixture(scope="module")
async def egress_stack(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EgressStack]:
    hosts = Hosts()
    await hosts.start()
    env = {"RESPONSES_BRIDGE_AUTH": "header", "RESPONSES_BRIDGE_CODE_TIMEOUT": "90",
           "RESPONSES_BRIDGE_CODE_CONCURRENCY": "20",  # every tenant's one call runs at once
           "RESPONSES_BRIDGE_CODE_EGRESS_ALLOWED_TARGETS": f"127.0.0.1:{hosts.port}",
           "RESPONSES_BRIDGE_CODE_EGRESS_BRIDGE_CONNECTIONS": str(EGRESS_CAP),
           "RESPONSES_BRIDGE_CODE_EGRESS_MAX_CONNECTIONS": str(2 * VICTIM_CALLS),  # one call's, in all
           "RESPONSES_BRIDGE_CODE_EGRESS_CONNECTION_TIMEOUT": "90"}
    try:
        async with running_sidecar(str(tmp_path_factory.mktemp("fair-egress")), fake_upstream, env=env, extproc=False,
                                   ready_headers={"x-tenant-id": VICTIM}, own_sqlite=True) as sidecar:
            yield EgressStack(sidecar, hosts)
    finally:
        hosts.release.set()
        assert hosts.server is not None
        hosts.server.close()


def one_after_another(port: int, path: str, count: int) -> str:
    """Code that asks ``path`` through the proxy's socket ``count`` times, one connection after another, and prints
    each answer's head."""
    return f"""
        import json, socket
        heads = []
        for _ in range({count}):
            try:
                end = socket.socket(socket.AF_UNIX)
                end.connect("/run/egress.sock")
                end.sendall(b"GET http://127.0.0.1:{port}{path} HTTP/1.1\\r\\n\\r\\n")
                data = b""
                while piece := end.recv(65536):
                    data += piece
                heads.append(data.split(b"\\r\\n\\r\\n")[0].decode())
            except OSError as error:
                heads.append(type(error).__name__)
        print(json.dumps(heads))
    """


async def _run(url: str, tenant: str, code: str) -> list[str]:
    """Run ``code`` in a container of ``tenant``'s: the heads its last line prints."""
    status, answer = await post(url, tenant, {"input": run_code(dedent(code)), "include": OUTPUTS,
                                              "tools": [{"type": "code_interpreter", "container": ALLOW}]})
    assert status == 200, answer
    call = _code_call(answer)
    assert call["status"] == "completed", call
    logs = "".join(output["logs"] for output in call.get("outputs") or () if output["type"] == "logs")
    heads: list[str] = orjson.loads(logs.strip().splitlines()[-1])
    return heads


def holding(port: int, tenant: str, count: int) -> str:
    """:func:`through_socket`'s ``count`` connections at once to ``/hold``, each head naming ``tenant`` (``X-Holder``,
    passed on by the proxy) so the test knows whose connections reached the host."""
    code = through_socket(port, "/hold", count)
    named = code.replace("HTTP/1.1\\r\\n\\r\\n", f"HTTP/1.1\\r\\nX-Holder: {tenant}\\r\\n\\r\\n")
    assert named != code
    return named


def holders_of(hosts: Hosts, tenant: str) -> int:
    """How many of ``tenant``'s connections reached ``/hold``."""
    return sum(f"X-Holder: {tenant}\r\n".encode() in head for head in hosts.heads)


async def _until_steady(hosts: Hosts, ticks: int) -> None:
    """Until no connection arrived at the host for ``ticks`` tenths of a second (bounded polling)."""
    seen, steady = -1, 0
    for _ in range(300):
        await asyncio.sleep(0.1)
        steady = steady + 1 if hosts.held == seen else 0
        seen = hosts.held
        if steady >= ticks:
            return


EGRESS_ARRIVALS = pytest.mark.parametrize(
    ("greedy", "together"),
    [(2, True), (4, True), (2, False), (4, False)],
    ids=["2-together", "4-together", "2-one-after-another", "4-one-after-another"])
# beside as many greedy tenants as connections or more (each holding one, above C / n < 1) nothing is taken back
# any more: the victim's connection waits two quanta for one to end (these never do), then is refused


@needs_sandbox
@EGRESS_ARRIVALS
async def test_egress_connections_a_victim_is_answered_as_alone_beside_greedy_tenants(
        egress_stack: EgressStack, greedy: int, together: bool) -> None:
    url, hosts = egress_stack.sidecar.http_url, egress_stack.hosts
    hosts.held = 0
    hosts.heads.clear()
    hosts.release.clear()
    holders = []
    try:
        for at in range(greedy):
            tenant = f"greedy{at}"
            holders.append(asyncio.create_task(_run(url, tenant, holding(hosts.port, tenant, EGRESS_CAP))))
            if not together:  # the next one comes once this one's connections are held (the ninth on: one)
                await _until(functools.partial(holders_of, hosts, tenant), f"{tenant}'s connections held")
                await _until_steady(hosts, 2)
        await _until(lambda: hosts.held >= EGRESS_CAP, "the greedy tenants' connections filled the cap")
        await _until_steady(hosts, 15)  # until their connections stop arriving (every call has tried all of its)
        # a call each: the proxy gives a connection back a moment after the code has read its end, so one call's
        # connections one after another would overlap and hold the victim's fair share (8/5 beside four)
        heads = [head for _ in range(VICTIM_CALLS) for head in await _run(url, VICTIM, one_after_another(
            hosts.port, "/quick", 1))]
    finally:
        hosts.release.set()
    held = [head for found in await asyncio.gather(*holders) for head in found]
    # before: the greedy tenants held 4 + 4 of the 8 and every one of the victim's was refused bridge_connection_limit
    assert sum(head.startswith("HTTP/1.0 200") for head in heads) >= VICTIM_CALLS - 1, heads
    assert sum(head.startswith("HTTP/1.0 200") for head in held) <= EGRESS_CAP, held
