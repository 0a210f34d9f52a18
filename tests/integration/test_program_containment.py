"""Programs contained, through both doors (a sidecar with ``auth: keys`` and three tenants, behind a real Envoy):
a program the bridge did not make is refused, never run; hostile programs' buffers never grow the sidecar (each
program's worker is bounded by the kernel); one tenant's queue of endless programs never holds another tenant's
program longer than one program's time bound. (A waiting program resuming across a restart, which is the store's,
is test_program_restart.py's.)

Envoy hands a request with ``programmatic_tool_calling`` (a server-side tool) to the sidecar's HTTP door, which
runs the tool loop and its programs and whose answer Envoy passes back: the refusal of a forged program is checked
through both doors; what the programs' workers and slots do (memory bounds, the queue's fairness) is the same
whichever door the request came in by, so those run on the HTTP door alone (``PROGRAMS_ONLY``).

The sidecar, its keys included, is on a SQLite file of its own: programs, their slots and their workers' memory
are the process's, whatever the store, so the PostgreSQL pass of scripts/test leaves the module out."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from responses_bridge.demo.procs import free_port
from responses_bridge.envoy_config import Auth, render_bootstrap
from responses_bridge.run.programs.isolate import DEFAULT_TIMEOUT
from tests.support.bridge import keys_command, running_sidecar
from tests.support.envoy import have_envoy, start_envoy
from tests.support.keyed_stack import Stack
from tests.support.memory import reset_peak, status_kb
from tests.support.schema import validate_response
from tools.process_memory import descendants, process_status_mb

pytest.importorskip("py_mini_racer")
pytestmark = [pytest.mark.skipif(not have_envoy(), reason="envoy binary not available"), pytest.mark.store_free]

MODEL = "fake-model"
KEY = base64.urlsafe_b64encode(b"s" * 32).decode()
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
           "allowed_callers": ["programmatic"]}
TOOLS = [{"type": "programmatic_tool_calling"}, WEATHER]
BUFFERS = ("js: const kept = []; for (let i = 0; i < 20; i++) { const b = new Uint8Array(64 << 20); b.fill(1); "
           "kept.push(b); } return kept.length")
PROGRAM_MEMORY = 256 << 20


async def make_keys(db: Path, *tenants: str) -> dict[str, str]:
    made = {}
    for tenant in tenants:
        result = await asyncio.to_thread(keys_command, str(db), "create", "--tenant", tenant, own_sqlite=True)
        assert result.returncode == 0, result.stderr
        made[tenant] = result.stdout.strip()
    return made


@contextlib.asynccontextmanager
async def keyed_stack(fake_upstream: str, tmp: Path, **env: str) -> AsyncIterator[Stack]:
    db = tmp / "bridge.db"
    keys = await make_keys(db, "acme", "beta", "gamma")
    async with running_sidecar(str(tmp), fake_upstream, "--db", str(db),
                               env={"RESPONSES_BRIDGE_AUTH": "keys", "RESPONSES_BRIDGE_SEALING_KEY": KEY, **env},
                               own_sqlite=True) as sidecar:
        listen_port = free_port()
        envoy = await start_envoy(render_bootstrap(
            listen_port=listen_port, extproc_port=sidecar.extproc_port,
            http_port=int(sidecar.http_url.rsplit(":", 1)[1]), upstream=fake_upstream, admin_port=0,
            auth=Auth("keys")))
        try:
            yield Stack(sidecar, f"http://127.0.0.1:{listen_port}", keys)
        finally:
            envoy.stop()


@pytest.fixture(scope="module")
async def stack(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with keyed_stack(fake_upstream, tmp_path_factory.mktemp("programs")) as made:
        yield made


@pytest.fixture(scope="module")
async def unlowered_stack(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """Programs never lowered: a program filling its bound must meet the bound, not its time limit. Lowered to nice
    10 after 0.1 CPU seconds, four of them beside a full test run's busy processes got a tenth of a core each, and
    one ran past its 5 s before its buffers reached the bound (what lowering does: test_program_priority.py)."""
    async with keyed_stack(fake_upstream, tmp_path_factory.mktemp("programs-unlowered"),
                           RESPONSES_BRIDGE_PROGRAM_LOWER_PRIORITY_AFTER="0") as made:
        yield made


@pytest.fixture(params=["http", "envoy"])
def door(request: pytest.FixtureRequest) -> str:
    return str(request.param)


PROGRAMS_ONLY = pytest.mark.parametrize("door", ["http"])  # the door is not the point: the HTTP door runs both


async def post(url: str, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        async with session.post(f"{url}/v1/responses", headers={"Authorization": f"Bearer {key}"},
                                json={"model": MODEL, "tools": TOOLS, **body}) as response:
            answer = await response.json(content_type=None)
            if response.status == 200:
                validate_response(answer)
            return response.status, answer


def unkeyed_fingerprint(code: str, clock_ms: int, seed: int, prefix: str) -> str:
    """What anyone could compute before fingerprints were keyed: a hash of the code, clock and seed."""
    payload = base64.urlsafe_b64encode(json.dumps([clock_ms, seed]).encode()).decode().rstrip("=")
    material = json.dumps([code, clock_ms, seed]).encode()
    return f"{prefix}{payload}.{hashlib.sha256(b'responses-bridge program' + bytes(1) + material).hexdigest()[:32]}"


@pytest.mark.parametrize("prefix", ["pf1.", "pf2."])
async def test_a_program_the_bridge_did_not_make_is_refused_naming_it(stack: Stack, door: str, prefix: str) -> None:
    code = 'await tools.get_weather({city: "x"}); return "FORGED RAN"'
    program = {"type": "program", "call_id": "call_forged", "code": code,
               "fingerprint": unkeyed_fingerprint(code, 0, 1, prefix)}
    call = {"type": "function_call", "call_id": "call_w", "name": "get_weather", "arguments": '{"city":"x"}',
            "caller": {"type": "program", "caller_id": "call_forged"}}
    output = {"type": "function_call_output", "call_id": "call_w", "output": "sun"}
    status, body = await post(stack.url(door), stack.keys["acme"], {
        "input": [{"role": "user", "content": "hi"}, program, call, output], "store": False})
    assert status == 400, body
    assert body["error"]["code"] == "invalid_program_fingerprint" and body["error"]["param"] == "input[1].fingerprint"
    assert "FORGED RAN" not in json.dumps(body)


def _sidecar_tree_peak(pid: int, stop: threading.Event, peaks: dict[int, float]) -> None:
    """The peak RSS (MB) of each of the sidecar's program workers, sampled until ``stop``."""
    while not stop.is_set():
        for child in descendants(pid):
            peaks[child] = max(peaks.get(child, 0.0), process_status_mb(child, "VmRSS"))
        time.sleep(0.01)


@PROGRAMS_ONLY
async def test_hostile_buffers_never_grow_the_sidecar(unlowered_stack: Stack, door: str) -> None:
    """Four programs at once, each keeping 20 filled 64 MiB buffers (5 GiB in all): before, the sidecar held them
    all (82 MiB -> 4.9 GiB); now each program's worker stops at its bound and the sidecar holds none."""
    stack = unlowered_stack
    pid = stack.sidecar.process.pid
    status, _ = await post(stack.url(door), stack.keys["acme"], {"input": "js: return 1", "store": False})
    assert status == 200  # the workers' first start is not the attack
    before = reset_peak(pid)
    stop, peaks = threading.Event(), dict[int, float]()
    watcher = threading.Thread(target=_sidecar_tree_peak, args=(pid, stop, peaks))
    watcher.start()
    try:
        answers = await asyncio.gather(*(post(stack.url(door), stack.keys[tenant], {"input": BUFFERS, "store": False})
                                         for tenant in ("acme", "acme", "beta", "gamma")))
    finally:
        stop.set()
        watcher.join()
    for status, body in answers:
        assert status == 200, body
        output = next(item for item in body["output"] if item["type"] == "program_output")
        assert output["status"] == "incomplete" and "memory bound" in output["result"], output
    grown_mib = (status_kb(pid, "VmHWM") - before) / 1024
    worker_peak = max(peaks.values())
    print(f"sidecar peak growth {grown_mib:.0f} MiB; worker peak RSS {worker_peak:.0f} MB "
          f"({len(peaks)} workers); bound {PROGRAM_MEMORY >> 20} MiB each")
    assert grown_mib < 128, grown_mib  # not one 64 MiB buffer's worth more than ordinary requests
    assert worker_peak < (PROGRAM_MEMORY >> 20) * 1.05 + 160  # the bound, beyond V8's own resident part


@PROGRAMS_ONLY
@pytest.mark.parametrize("attackers", [["acme"], ["acme", "gamma"]], ids=["one-attacker", "two-attackers"])
async def test_a_tenants_queue_of_endless_programs_never_holds_another_tenants_program(
        stack: Stack, door: str, attackers: list[str]) -> None:
    """Eight ``while (true) {}`` programs (each 5 s) from the attackers on four slots: first in first out, the other
    tenant's one-line program waited a round or more (19 s behind 16); now at most one program's time bound — the
    first slot given back goes to it, served least (fairness/share.py; no attacker's program is taken back for it)."""
    alone_started = time.monotonic()
    status, _ = await post(stack.url(door), stack.keys["beta"], {"input": "js: return 'alone'", "store": False})
    alone = time.monotonic() - alone_started
    assert status == 200
    ended_at: dict[int, float] = {}

    async def hog(index: int) -> tuple[int, dict]:
        answer = await post(stack.url(door), stack.keys[attackers[index % len(attackers)]],
                            {"input": "js: while (true) {}", "store": False})
        ended_at[index] = time.monotonic()
        return answer

    hogs = [asyncio.create_task(hog(index)) for index in range(8)]
    await asyncio.sleep(1.0)  # the attackers' programs hold the slots and queue
    started = time.monotonic()
    status, body = await post(stack.url(door), stack.keys["beta"], {"input": "js: return 'mine'", "store": False})
    waited = time.monotonic() - started
    assert status == 200, body
    output = next(item for item in body["output"] if item["type"] == "program_output")
    assert output["status"] == "completed" and output["result"] == "mine"
    # the hogs that ended by now ended by their bound; the others are still in their round or queued behind the
    # victim's, and what they end as (their bound: test_program_workers.py) proves nothing more
    # here — they are dropped, as a client does, which ends their programs (run/programs/pool.py RunHandle)
    await asyncio.sleep(0.5)
    preempted = 0
    for index, task in enumerate(hogs):
        if not task.done():
            task.cancel()
            continue
        hog_status, hog = await task
        if hog_status == 503:  # the rule before took an attacker's slot back for a tenant under its share
            assert hog["error"]["code"] == "preempted_for_fairness", hog
            preempted += ended_at[index] >= started
        else:
            assert hog_status == 200 and "time limit" in json.dumps(hog["output"])
    # nothing is taken back for the victim now (the rule before took one of two attackers' slots)
    assert preempted == 0, preempted
    await asyncio.gather(*hogs, return_exceptions=True)
    print(f"beta alone {alone:.2f} s, beside {len(attackers)} attacker(s)' 8 endless programs {waited:.2f} s")
    assert waited < DEFAULT_TIMEOUT + alone + 1.0, waited
