"""Memory given back, through a real sidecar: after a burst ends the process comes back near its size before it, and
the memory backstop acts on what requests hold, never refusing a bystander for what others' requests left behind.

* Sixteen programs at once (programmatic tool calling: V8 in the sidecar's worker processes), each answering with a
  client call of 1 MiB of arguments: the sidecar and its workers grew 99 -> 719 MiB and were still 243 MiB over
  their start 10 s after the last answer — the burst's spare workers kept for a minute, the answers' bodies kept by
  idle keep-alive connections, freed heap kept by the allocator. Now their RSS together is back within 64 MiB of
  where it stood before the burst within 10 s (polled: the bound is the wait's), beside its control — the burst's
  peak, well past that (else the test would prove nothing). Through the HTTP door and through Envoy.
* Sixteen programs each answering with twenty client calls of 1 MiB: serve (the sidecar's own process) was still
  +222 MiB over its start 10 s after the last answer — the items in reference cycles no collection came to free, and
  the tops of its threads' arenas no trim reaches. Now it is back within 64 MiB of it within 10 s, beside its
  control (the peak past it). Through the HTTP door and through Envoy.
* With the backstop's high watermark just over a fresh sidecar's RSS, an attacker's twelve held requests of 2 MB
  each pass it and the backstop ends them one by one; meanwhile a bystander (a tenant holding nothing) sends its
  small requests one at a time: every one is answered, while the attacker's own new request is refused
  (``server_overloaded``, its control: what is being ended is not replaced). Before, every new request was refused
  while the backstop acted. Through the HTTP door and through Envoy's ext_proc door.
* The backstop judges what requests hold, after they let go: a bystander's small request held open all the while
  the backstop ends the attacker's, the low watermark out of reach, is never ended (a request charged under a
  bystander's size never is, and after ending a request the backstop waits for its memory to show up as returned);
  before, once the attacker's were ended it ended the bystander's too, every time, through either door.

Each sidecar is on a SQLite file of its own (memory and the processes' programs are the subject, not the store),
so the PostgreSQL pass of scripts/test leaves the module out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from responses_bridge.envoy_config import Auth, render_bootstrap
from tests.support.bridge import Sidecar, keys_command, running_sidecar
from tests.support.envoy import free_port, have_envoy, start_envoy
from tests.support.memory import peak_while, status_kb
from tests.support.sdk import async_sdk
from tests.support.streams import held_stream

pytestmark = pytest.mark.store_free

MODEL = "fake-model"
MiB = 1 << 20
BURST = 16
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
           "allowed_callers": ["programmatic"]}
PROGRAM = 'js: const big = "x".repeat(1 << 20); const r = await tools.get_weather({city: big}); return r'
"""A program that comes back with one client call of 1 MiB of arguments."""
WIDE_CALLS = 20
WIDE_PROGRAM = ('js: const big = "x".repeat(1 << 20); const r = await Promise.all(Array.from({length: '
                f'{WIDE_CALLS}}}, (_, i) => tools.get_weather({{city: big + i}}))); return r.length')
"""A program that comes back with twenty client calls of 1 MiB of arguments each."""
RETURN_SECONDS = 10.0
ATTACKS = 12
ATTACK_TEXT = "a" * 2_000_000
BYSTANDER_REQUESTS = 8
HIGH_OVER_START = 24 * MiB
LOW_OVER_START = 4 * MiB
"""The watermarks over a fresh sidecar's RSS: the attacker's twelve held 2 MB requests pass the high one, and the
low one is out of reach while they hold, so the backstop acts all the while the bystander is served."""


def family_rss(pid: int) -> int:
    """The RSS of ``pid`` and its children (the programs' workers) in bytes: what the sidecar's cgroup counts."""
    total = status_kb(pid, "VmRSS")
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                total += status_kb(child, "VmRSS")
            except (OSError, AssertionError):
                continue  # it ended meanwhile
    return total << 10


async def program_request(session: aiohttp.ClientSession, url: str, program: str = PROGRAM) -> tuple[int, int]:
    """(status, the longest call's arguments); see :func:`program_calls`."""
    status, calls = await program_calls(session, url, program)
    return status, max(calls, default=0)


async def program_calls(session: aiohttp.ClientSession, url: str, program: str) -> tuple[int, list[int]]:
    """(status, the length of each client call's arguments) of one program's response."""
    async with session.post(f"{url}/v1/responses", json={
            "model": MODEL, "input": program, "store": False,
            "tools": [{"type": "programmatic_tool_calling"}, WEATHER]}) as answer:
        body = await answer.json()
    return answer.status, [len(item["arguments"]) for item in body.get("output", []) if item["type"] == "function_call"]


@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_after_a_burst_of_programs_the_sidecar_is_back_near_its_size_before_within_10_s(
        fake_upstream: str, tmp_path: Path, door: str) -> None:
    """With its defaults (``auth: none``, the default budget: sixteen programs take all four slots). Through Envoy
    the programs' requests reach the sidecar's HTTP door over Envoy's own pool of kept-alive connections: what a
    connection keeps of its last answer is the sidecar's either way."""
    pytest.importorskip("py_mini_racer")
    if not have_envoy():
        pytest.skip("envoy binary not available")
    before, peak, after, answers = await burst_then_wait(
        fake_upstream, tmp_path, door, family_rss, lambda session, url: program_request(session, url), 180)
    assert answers == [(200, answers[0][1])] * BURST and answers[0][1] > MiB, answers[:2]
    print(f"sidecar and workers: {before / MiB:.0f} MiB before, peak {peak / MiB:.0f}, {after / MiB:.0f} after")
    assert peak > before + 64 * MiB, (before, peak)  # the control: the burst did grow it past the bound
    assert after <= before + 64 * MiB, (before, after)


@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_sixteen_programs_twenty_calls_of_1_mib_leave_serve_within_64_mib_of_its_start_10_s_after(
        fake_upstream: str, tmp_path: Path, door: str) -> None:
    """Sixteen programs at once, each answering with twenty client calls of 1 MiB of arguments: serve was still
    +222 MiB over its size before them 10 s after the last answer (+263 in the report), the function-call items held
    in reference cycles (``ProgramCalls`` <-> ``CallRunner``) that only a full collection frees, and the tops of the
    programs' threads' arenas, which no trim reaches. Now serve's RSS is back within 64 MiB of it within 10 s
    (polled: the bound is the wait's), beside its control — the burst's peak, well past that. With its defaults."""
    pytest.importorskip("py_mini_racer")
    if not have_envoy():
        pytest.skip("envoy binary not available")
    before, peak, after, answers = await burst_then_wait(
        fake_upstream, tmp_path, door, lambda pid: status_kb(pid, "VmRSS") << 10,
        lambda session, url: program_calls(session, url, WIDE_PROGRAM), 300)
    came_back = sum(1 for _, calls in answers if len(calls) == WIDE_CALLS and min(calls) > MiB)
    print(f"serve: {before / MiB:.0f} MiB before, peak {peak / MiB:.0f}, {after / MiB:.0f} after; {came_back} of "
          f"{BURST} programs came back with their {WIDE_CALLS} calls")
    assert all(status == 200 for status, _ in answers), answers
    assert came_back >= BURST // 4  # on a loaded machine a program may run past its time limit: answered, no calls
    assert peak > before + 64 * MiB, (before, peak)  # the control: the burst did grow it past the bound
    assert after <= before + 64 * MiB, (before, after)


async def burst_then_wait(fake_upstream: str, tmp_path: Path, door: str, rss: Callable[[int], int],
                          request: Callable[[aiohttp.ClientSession, str], Awaitable[Any]], total: float
                          ) -> tuple[int, int, int, list[Any]]:
    """A sidecar with its defaults (``auth: none``, the default budget) and its Envoy; one program request first (a
    worker started: not what is measured), then :data:`BURST` ``request``s at once through ``door``, then up to
    :data:`RETURN_SECONDS` for ``rss`` (of the sidecar's pid) to come back within 64 MiB of its size before them
    (polled: the bound is the wait's): (before, peak, after, the answers)."""
    async with keyed_stack(fake_upstream, tmp_path, {}, keyed=False) as (sidecar, envoy_url, _), \
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=total)) as session:
        url = sidecar.http_url if door == "http" else envoy_url
        pid = sidecar.process.pid
        assert (await program_request(session, url))[0] == 200
        await asyncio.sleep(1)
        before = rss(pid)
        peak, answers = await peak_while(lambda: rss(pid), before, asyncio.gather(
            *(request(session, url) for _ in range(BURST))))
        deadline = time.monotonic() + RETURN_SECONDS
        after = rss(pid)
        while after > before + 64 * MiB and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            after = rss(pid)
    return before, peak, after, list(answers)


@asynccontextmanager
async def keyed_stack(fake_upstream: str, tmp_path: Path, env: dict[str, str], *, keyed: bool = True
                      ) -> AsyncIterator[tuple[Sidecar, str, dict[str, str]]]:
    """A sidecar with an attacker's and a bystander's keys (``keyed``; else ``auth: none`` and its default budget)
    on a 2 GiB budget, and its Envoy: (sidecar, Envoy's URL, keys)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    db = str(tmp_path / "bridge.db")
    keys = {}
    for tenant in ("attacker", "bystander") if keyed else ():
        made = await asyncio.to_thread(keys_command, db, "create", "--tenant", tenant, own_sqlite=True)
        assert made.returncode == 0, made.stderr
        keys[tenant] = made.stdout.strip()
    listen_port = free_port()
    settings = {"RESPONSES_BRIDGE_AUTH": "keys", "RESPONSES_BRIDGE_MEMORY_BUDGET_BYTES": str(2 << 30),
                "RESPONSES_BRIDGE_MEMORY_WATCH_INTERVAL": "0.2"} if keyed else {}
    async with running_sidecar(str(tmp_path), fake_upstream, "--db", db, "--upstream-via",
                               f"http://127.0.0.1:{listen_port}/v1", env={**settings, **env},
                               own_sqlite=True) as sidecar:
        envoy = await start_envoy(render_bootstrap(
            listen_port=listen_port, extproc_port=sidecar.extproc_port,
            http_port=int(sidecar.http_url.rsplit(":", 1)[1]), upstream=fake_upstream, admin_port=0,
            auth=Auth("keys" if keyed else "none")))
        try:
            yield sidecar, f"http://127.0.0.1:{listen_port}", keys
        finally:
            envoy.stop()


async def metric(http_url: str, name: str) -> float:
    """The sum of the sidecar's metric lines starting with ``name``."""
    async with aiohttp.ClientSession() as session, session.get(f"{http_url}/metrics") as answer:
        text = await answer.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


async def backstop_active(http_url: str) -> bool:
    return await metric(http_url, "responses_bridge_memory_backstop_active ") > 0


async def attack(client: openai.AsyncOpenAI, index: int) -> Any:
    """One of the attacker's requests, held (its upstream call stalled) once its first text is in; or how it ended."""
    try:
        stream = await client.responses.create(model=MODEL, input=f"attack {index} [stall_after=1:120000] "
                                               + ATTACK_TEXT, stream=True)
        async for event in stream:
            if event.type == "response.output_text.delta":
                return stream
            if event.type == "response.failed":
                return "failed"
    except openai.InternalServerError:
        return "refused"
    except openai.APIConnectionError:
        return "cut"
    return "ended"


@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_a_bystander_is_served_while_the_backstop_ends_the_attackers_requests(
        fake_upstream: str, tmp_path: Path, door: str) -> None:
    if not have_envoy():
        pytest.skip("envoy binary not available")
    async with keyed_stack(fake_upstream, tmp_path / "probe", {"RESPONSES_BRIDGE_MEMORY_WATCH_INTERVAL": "0"}) \
            as (probe, _, _):
        await asyncio.sleep(1)
        at_start = status_kb(probe.process.pid, "VmRSS") << 10
    # read once a second (the default): the backstop ends at most one request a reading, and waits for what each
    # held to show up as returned, so it acts for seconds on the attacker's few held requests — longer than the
    # bystander's eight; read five times a second it had ended them all and stood down before the bystander's last
    # (a loaded run: active before, not after)
    env = {"RESPONSES_BRIDGE_MEMORY_HIGH_WATERMARK_BYTES": str(at_start + HIGH_OVER_START),
           "RESPONSES_BRIDGE_MEMORY_LOW_WATERMARK_BYTES": str(at_start + LOW_OVER_START),
           "RESPONSES_BRIDGE_MEMORY_WATCH_INTERVAL": "1"}
    streams: list[Any] = []
    async with keyed_stack(fake_upstream, tmp_path / "sidecar", env) as (sidecar, envoy_url, keys):
        url = sidecar.http_url if door == "http" else envoy_url
        options = {"base_url": f"{url}/v1", "max_retries": 0, "timeout": 60}
        async with async_sdk(api_key=keys["attacker"], **options) as attacker, \
                async_sdk(api_key=keys["bystander"], **options) as bystander:
            # the bystander comes as soon as the backstop acts, not once every attack has answered: on a loaded
            # machine the slowest attack's first text came after the backstop had ended all the others
            attacks = [asyncio.ensure_future(attack(attacker, index)) for index in range(ATTACKS)]
            try:
                for _ in range(100):  # the held requests' memory read past the high watermark
                    if await backstop_active(sidecar.http_url):
                        break
                    await asyncio.sleep(0.1)
                active_before = await backstop_active(sidecar.http_url)
                again = await attack(attacker, ATTACKS)
                if not isinstance(again, str):
                    streams.append(again)
                    again = "held"
                served = [(await bystander.responses.create(model=MODEL, input=f"small {index}")).status
                          for index in range(BYSTANDER_REQUESTS)]
                active_after = await backstop_active(sidecar.http_url)
            finally:
                outcomes = await asyncio.gather(*attacks, return_exceptions=True)
                streams += [outcome for outcome in outcomes if not isinstance(outcome, (str, BaseException))]
                for stream in streams:
                    await stream.close()
    print(f"{len(streams)} of {ATTACKS} attacks held; backstop active {active_before} -> {active_after}; "
          f"the attacker's next request: {again}")
    assert active_before and active_after, (active_before, active_after)  # served all the while it acted
    assert served == ["completed"] * BYSTANDER_REQUESTS
    assert again in ("refused", "cut"), again  # the control: the holder's new work is refused while it acts


PREEMPTED_BY_BACKSTOP = 'responses_bridge_memory_budget_preempted_total{reason="memory_high_watermark"}'


async def still_held(stream: Any) -> bool:
    """Whether a held stream is still open, its model call stalled: no event comes within a second (a request the
    backstop ended has its ``response.failed`` or its cut connection waiting already)."""
    events = stream.__aiter__()
    try:
        event = await asyncio.wait_for(events.__anext__(), 1.0)
    except TimeoutError:
        return True
    except (openai.APIError, StopAsyncIteration):
        return False
    return event.type == "response.output_text.delta"  # the next words of its answer: still served


@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_a_bystanders_request_in_flight_is_never_ended_by_the_backstop(
        fake_upstream: str, tmp_path: Path, door: str) -> None:
    """The issue's finding, made certain: a bystander's small request (about 1 KB charged) is held open (its model
    call stalled) all the while the backstop ends the attacker's requests, with the low watermark out of reach (1
    byte), so once the attacker's are all ended nothing the requests hold could bring the reading under it.
    Before, the backstop then ended the bystander's request (``memory_taken_back holder=bystander``, 503 /
    ``response.failed`` ``preempted_for_fairness``), every time; now a request charged under a bystander's size
    is never ended: the backstop ends every request of the attacker's it holds (the control: it acted, and ended
    all it may; the attacker's later ones are refused), finds nothing more to end and stands down, and the
    bystander's request is still being answered."""
    if not have_envoy():
        pytest.skip("envoy binary not available")
    async with keyed_stack(fake_upstream, tmp_path / "probe", {"RESPONSES_BRIDGE_MEMORY_WATCH_INTERVAL": "0"}) \
            as (probe, _, _):
        await asyncio.sleep(1)
        at_start = status_kb(probe.process.pid, "VmRSS") << 10
    env = {"RESPONSES_BRIDGE_MEMORY_HIGH_WATERMARK_BYTES": str(at_start + HIGH_OVER_START),
           "RESPONSES_BRIDGE_MEMORY_LOW_WATERMARK_BYTES": "1"}
    streams: list[Any] = []
    async with keyed_stack(fake_upstream, tmp_path / "sidecar", env) as (sidecar, envoy_url, keys):
        url = sidecar.http_url if door == "http" else envoy_url
        options = {"base_url": f"{url}/v1", "max_retries": 0, "timeout": 120}
        async with async_sdk(api_key=keys["attacker"], **options) as attacker, \
                async_sdk(api_key=keys["bystander"], **options) as bystander:
            small = await held_stream(bystander, MODEL, "small [stall_after=1:120000]")
            streams.append(small)
            try:
                outcomes = await asyncio.gather(*(attack(attacker, index) for index in range(ATTACKS)))
                held = [outcome for outcome in outcomes if not isinstance(outcome, str)]
                streams += held
                for _ in range(600):  # the backstop acted, then stood down: nothing left it may end
                    ended = await metric(sidecar.http_url, PREEMPTED_BY_BACKSTOP)
                    if ended and not await backstop_active(sidecar.http_url):
                        break
                    await asyncio.sleep(0.1)
                attacks_held = [await still_held(stream) for stream in held]
                served = await still_held(small)
            finally:
                for stream in streams:
                    await stream.close()
    print(f"ended by the backstop: {ended:.0f}; the attacker's requests: {[o for o in outcomes if isinstance(o, str)]}"
          f" and {len(held)} held, still held after: {sum(attacks_held)}; the bystander's still served: {served}")
    assert ended and not any(attacks_held), (ended, attacks_held)  # the control: it ended every attack it held
    assert served  # the rule: never the bystander's
