"""``scripts/crash-probe``: rounds of ``kill -9`` under load, then a count of every accepted run's end.

Durable runs (docs/state.md, "Durable background responses"; docs/agents.md, "What survives what") promise that
work the bridge answered ``200``/``202`` for is not lost when its process dies. The integration tests stop one run
at a chosen point; this stops a sidecar at no chosen point, with many runs of several kinds in flight at once, the
way an OOM kill does. It starts the fake upstream, a small SearXNG stand-in (for server-side ``web_search`` steps)
and one sidecar (HTTP door, SQLite file, an upstream key so runs are resumable), then for ``--rounds`` rounds:
opens ``--load`` runs at once — slow background responses (``[chunks] [delay]``: a multi-chunk model call),
background tool loops (a search, then a slow answer), Agents sessions (a slow first turn with two inputs queued
behind it) and sessions whose turn waits on the client (a call of its function, answered only after the kill and the
restart: waiting.py) — waits ``--kill-after`` seconds (and longer, up to :data:`KIND_WAIT`, until each kind has an
accepted run), ``kill -9``s the sidecar's process group and starts it again on the same file. Then it waits for
everything to settle and checks each accepted run:

* a background response ended ``completed`` exactly once: one ``response.completed`` in its stored stream, none
  ``failed``, its events numbered without a gap or a repeat, its answer whole (``Echo: …`` or ``Tool result: …``);
* each accepted session input was answered by exactly one ``completed`` turn, and no turn ``failed`` (a waiting
  session's answer: ``Tool result: …`` of the output the probe sent).

A run is *lost* when it is not found, or has not ended by ``--settle`` seconds. A run killed more often than
``RESPONSES_BRIDGE_BACKGROUND_MAX_RESUMES`` allows (``--max-resumes``; a run opened just before a kill and resumed
into the next rounds' kills) fails saying so, by design (a crash loop is bounded): counted as *limit*, apart from
the other failures, and the inputs queued behind such a turn must still be answered. *Resumed* counts the runs whose
stored stream shows a second start (a response's second ``response.in_progress``, a turn's second
``agent.session.turn.in_progress``). A POST the kill cut off before it was answered was never accepted and is not
counted. The process exits 1 when any accepted run was lost, ran twice, or failed for any reason but the limit.

``--fault`` picks what strikes each round (faults.py): ``kill`` (the above), ``db-outage`` (one
replica's database connections cut for ``--outage`` seconds, longer than a lease, while it runs) and ``clock-skew`` (the
second replica's wall clock ``--skew`` seconds off all along; a run *resumed* there was a live run taken over: counted
*twice*). Both need ``--store postgres``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from responses_bridge.demo.procs import ManagedProcess, free_port, wait_http

from .faults import FAULTS, Fault, prepared
from .waiting import LABEL, answer_text, answer_waiting, open_waiting

BETA = {"OpenAI-Beta": "agents=v1"}
TERMINAL = ("completed", "failed", "cancelled", "incomplete")
KINDS = ("response", "search", "session", "waiting")
LIMIT = "(the limit is"
"""In the error of a run the resume limit ended (a response's and a session turn's messages both say it so)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="crash-probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="kill -9 rounds (default 3)")
    parser.add_argument("--load", type=int, default=24, help="runs opened at once per round, the kinds in turn "
                        "(response, search, session, waiting) (default 24)")
    parser.add_argument("--chunks", type=int, default=30, help="chunks of a slow model call (default 30)")
    parser.add_argument("--delay", type=int, default=100, help="milliseconds between chunks (default 100)")
    parser.add_argument("--kill-after", type=float, default=1.5, help="seconds from a round's first POST to the "
                        "kill (default 1.5: mid-way through the slow calls; later, up to 20 s more, until each kind "
                        "has an accepted run)")
    parser.add_argument("--settle", type=float, default=180.0, help="seconds the runs get to end after the last "
                        "restart (default 180)")
    parser.add_argument("--max-resumes", type=int, default=None, help="the sidecar's "
                        "RESPONSES_BRIDGE_BACKGROUND_MAX_RESUMES (default: its own, 3)")
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite", help="postgres: two "
                        "replicas on a PostgreSQL the pgserver wheel runs (the [test] extra), one killed each round in "
                        "turn, the other taking its runs over once their lease (1 s) lapsed (default sqlite: one "
                        "sidecar, restarted on its file)")
    parser.add_argument("--database-url", default=None, help="with --store postgres: this database instead of a "
                        "new server's")
    parser.add_argument("--fault", choices=FAULTS, default="kill", help="what strikes each round: kill (kill -9, "
                        "the default), db-outage (a replica's database cut for --outage seconds), clock-skew (the "
                        "second replica's clock --skew seconds off); the last two need --store postgres")
    parser.add_argument("--outage", type=float, default=3.0, help="seconds a db-outage lasts (default 3: three "
                        "leases)")
    parser.add_argument("--skew", type=float, default=20.0, help="seconds the clock-skew replica's clock is "
                        "ahead (default 20)")
    parser.add_argument("--keep", metavar="DIR", default=None, help="keep the SQLite file in DIR (default: a "
                        "temporary folder, removed)")
    parser.add_argument("--sidecar-log", metavar="FILE", default=None, help="the sidecar's log (default: none)")
    return parser.parse_args(argv)


@dataclass
class Run:
    """One accepted run: a background response (``response``, ``search``) or a session and its accepted inputs."""

    kind: str
    id: str
    round: int
    marker: str
    inputs: list[str] = field(default_factory=list)
    outcome: str = "lost"
    resumed: bool = False
    detail: str = ""
    unanswered: str = ""  # a waiting session's call the probe could not answer: why


class SearXNG:
    """A SearXNG stand-in on 127.0.0.1 counting the searches per query (the probe's markers)."""

    def __init__(self) -> None:
        self.queries: collections.Counter[str] = collections.Counter()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _search(self, request: web.Request) -> web.Response:
        query = request.query.get("q", "")
        self.queries[query] += 1
        return web.json_response({"query": query, "results": [
            {"url": f"https://example.com/{query}", "title": query, "content": f"about {query}", "score": 1.0}]})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/search", self._search)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


class Sidecar:
    """``serve`` on one SQLite file, started again (on a new port) after each kill."""

    def __init__(self, upstream: str, db: str, search_url: str, log_file: str | None,
                 env: dict[str, str] | None = None) -> None:  # env: RESPONSES_BRIDGE_DATABASE_URL for PostgreSQL
        self.upstream, self.db, self.log_file = upstream, db, log_file
        self.env = {"RESPONSES_BRIDGE_WEB_SEARCH": f"searxng:{search_url}", **(env or {})}
        self.process: ManagedProcess | None = None
        self.base = ""

    async def start(self) -> None:
        port = free_port()
        argv = [sys.executable, "-m", "responses_bridge", "serve", "--upstream", self.upstream, "--http-port",
                str(port), "--no-extproc", "--db", self.db, "--api-key", "sk-upstream"]  # a key: runs resumable
        self.process = ManagedProcess(argv, f"sidecar:{port}", env=self.env, log_file=self.log_file)
        self.process.start()
        self.base = f"http://127.0.0.1:{port}"
        await wait_http(f"{self.base}/health", timeout=60, process=self.process)

    def kill(self) -> None:
        assert self.process is not None and self.process.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def slow(text: str, chunks: int, delay: int) -> str:
    return f"{text} [chunks={chunks}] [delay={delay}]"


async def open_run(http: aiohttp.ClientSession, base: str, kind: str, round_no: int, args: argparse.Namespace,
                   after: float) -> Run | None:
    """Opens one run ``after`` seconds from now; the run if the sidecar accepted it (a POST the kill cut off, or
    sent to a dead process, was never accepted: ``None``)."""
    await asyncio.sleep(after)
    marker = f"p{uuid.uuid4().hex[:10]}"
    try:
        if kind == "session":
            return await open_session(http, base, marker, round_no, args)
        if kind == "waiting":
            session_id = await open_waiting(http, base, marker)
            return None if session_id is None else Run(kind, session_id, round_no, marker, inputs=[LABEL])
        text = f"call web_search {marker}" if kind == "search" else marker
        body = {"model": "fake-model", "input": slow(text, args.chunks, args.delay), "background": True}
        if kind == "search":
            body["tools"] = [{"type": "web_search"}]
        async with http.post(f"{base}/v1/responses", json=body) as answer:
            if answer.status != 200:
                return None
            return Run(kind, (await answer.json())["id"], round_no, marker)
    except (TimeoutError, aiohttp.ClientError):
        return None


async def open_session(http: aiohttp.ClientSession, base: str, marker: str, round_no: int,
                       args: argparse.Namespace) -> Run | None:
    """A session whose first turn is slow, with two more inputs queued behind it (those accepted are kept)."""
    async with http.post(f"{base}/v1/agents/sessions", headers=BETA, json={
            "agent": {"model": "fake-model"}, "environment": {"type": "none"},
            "input": slow(f"{marker} first", args.chunks, args.delay)}) as answer:
        if answer.status != 200:
            return None
        run = Run("session", (await answer.json())["id"], round_no, marker, inputs=["first"])
    for label in ("second", "third"):
        try:
            async with http.post(f"{base}/v1/agents/sessions/{run.id}/events", headers=BETA, json={"events": [
                    {"type": "agent.session.input.message",
                     "input": [{"role": "user", "content": [{"type": "input_text", "text": f"{marker} {label}"}]}]}
            ]}) as answer:
                if answer.status == 202:
                    run.inputs.append(label)
        except (TimeoutError, aiohttp.ClientError):
            break
    return run


def sse_events(raw: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: {")]


async def check_response(http: aiohttp.ClientSession, base: str, run: Run, deadline: float) -> None:
    """Waits for the response to end, then judges its stored stream (see the module's docstring)."""
    while True:
        async with http.get(f"{base}/v1/responses/{run.id}") as answer:
            if answer.status == 404:
                run.outcome, run.detail = "lost", "not found"
                return
            body = await answer.json()
        if body.get("status") in TERMINAL:
            break
        if time.monotonic() > deadline:
            run.outcome, run.detail = "lost", f"still {body.get('status')}"
            return
        await asyncio.sleep(0.5)
    async with http.get(f"{base}/v1/responses/{run.id}", params={"stream": "true", "starting_after": "-1"}) as answer:
        events = sse_events(await answer.read())
    kinds = [event["type"] for event in events]
    run.resumed = kinds.count("response.in_progress") > 1
    starts = f"{kinds.count('response.in_progress')} starts stored; "
    if body["status"] != "completed":
        run.outcome = "limit" if LIMIT in str((body.get("error") or {}).get("message")) else "failed"
        run.detail = starts + f"{body['status']}: {(body.get('error') or {}).get('message')}"
        return
    numbers = [event["sequence_number"] for event in events]
    texts = [part.get("text", "") for item in body.get("output", []) if item.get("type") == "message"
             for part in item.get("content", [])]
    whole = len(texts) == 1 and texts[0].startswith("Tool result: " if run.kind == "search" else f"Echo: {run.marker}")
    if kinds.count("response.completed") != 1 or "response.failed" in kinds:
        run.outcome, run.detail = "twice", f"stream ends: {[k for k in kinds if k.startswith('response.')][-3:]}"
    elif numbers != list(range(len(numbers))):
        run.outcome, run.detail = "twice", "stream numbered with a gap or a repeat"
    elif not whole:
        run.outcome, run.detail = "twice", f"answer not whole: {texts!r}"
    else:
        run.outcome = "completed"


async def check_session(http: aiohttp.ClientSession, base: str, run: Run, deadline: float) -> None:
    """Waits for the session's turns to end, then: each accepted input answered by exactly one completed turn."""
    while True:
        async with http.get(f"{base}/v1/agents/sessions/{run.id}/turns", headers=BETA,
                            params={"order": "asc", "limit": "100"}) as answer:
            if answer.status == 404:
                run.outcome, run.detail = "lost", "session not found"
                return
            turns = (await answer.json())["data"]
        if len(turns) >= len(run.inputs) and all(turn["status"] in TERMINAL for turn in turns):
            break
        if time.monotonic() > deadline:
            run.outcome, run.detail = "lost", f"turns {[turn['status'] for turn in turns]}"
            return
        await asyncio.sleep(0.5)
    answers: list[str] = []  # the completed turns' (a failed turn may hold what its interrupted call streamed)
    shown: list[tuple[str, str, list[str]]] = []
    for turn in turns:
        async with http.get(f"{base}/v1/agents/sessions/{run.id}/turns/{turn['id']}/items", headers=BETA,
                            params={"order": "asc"}) as answer:
            items = (await answer.json())["data"]
        texts = [part.get("text", "") for item in items if item["type"] == "message"
                 and item["role"] == "assistant" for part in item.get("content", [])]
        ids = [item.get("id") for item in items if item["type"] == "message" and item["role"] == "assistant"]
        shown.append((turn["id"], turn["status"], [f"{item_id} {len(text)} chars {text[:24]!r}"
                                                   for item_id, text in zip(ids, texts, strict=False)]))
        if turn["status"] == "completed":
            answers += texts
    async with http.get(f"{base}/v1/agents/sessions/{run.id}/events", headers=BETA,
                        params={"until_idle": "true"}) as answer:
        starts = collections.Counter(event.get("turn_id") for event in sse_events(await answer.read())
                                     if event.get("type") == "agent.session.turn.in_progress")
    run.resumed = any(count > 1 for count in starts.values())
    failed = [turn for turn in turns if turn["status"] != "completed"]
    limited = [turn for turn in failed if LIMIT in str((turn.get("error") or {}).get("message"))]
    expected = [f"Tool result: {answer_text(run.marker)}" if run.kind == "waiting" else f"Echo: {run.marker} {label}"
                for label in run.inputs]
    counts = [sum(text.startswith(prefix) for text in answers) for prefix in expected]
    if len(limited) < len(failed):
        bad = next(turn for turn in failed if turn not in limited)
        run.outcome = "failed"
        run.detail = f"turn {bad['id']} {bad['status']}: {(bad.get('error') or {}).get('message')}"
    elif counts.count(0) != len(limited):  # the limit's turns unanswered, every other input answered
        run.outcome, run.detail = "lost", f"inputs {run.inputs} answered {counts} times, {len(limited)} at the limit"
    elif any(count > 1 for count in counts):
        run.outcome = "twice"
        run.detail = f"inputs {run.inputs} answered {counts} times; turns {shown}; turn starts {dict(starts)}"
    elif limited:
        run.outcome = "limit"
        turn = limited[0]
        run.detail = f"turn {turn['id']}, {starts[turn['id']]} starts stored: {turn['error']['message']}"
    else:
        run.outcome = "completed"


async def check(base: str, runs: list[Run], settle: float) -> None:
    """Judges every run (sets ``outcome``, ``resumed``, ``detail``), waiting up to ``settle`` seconds for them."""
    deadline = time.monotonic() + settle
    limit = asyncio.Semaphore(16)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        async def one(run: Run) -> None:
            async with limit:
                if run.unanswered:
                    run.outcome, run.detail = "lost", run.unanswered
                elif run.kind in ("session", "waiting"):
                    await check_session(http, base, run, deadline)
                else:
                    await check_response(http, base, run, deadline)
        await asyncio.gather(*(one(run) for run in runs))


async def run_rounds(sidecars: list[Sidecar], args: argparse.Namespace, fault: Fault) -> list[Run]:
    """The rounds: load (spread over the replicas), the fault struck mid-load (``kill -9`` of one, each in turn,
    started again on the same store; or a database outage; faults.py). The runs accepted, in order."""
    runs: list[Run] = []
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as http:
        for round_no in range(1, args.rounds + 1):
            ramp = min(0.5, args.kill_after / 2)
            tasks = [asyncio.create_task(open_run(http, sidecars[at % len(sidecars)].base, KINDS[at % len(KINDS)],
                                                  round_no, args, ramp * at / max(1, args.load)))
                     for at in range(args.load)]
            await asyncio.sleep(args.kill_after)
            await every_kind_accepted(tasks, {KINDS[at % len(KINDS)] for at in range(args.load)}, KIND_WAIT)
            struck = asyncio.ensure_future(fault.strike(round_no, sidecars))
            accepted = [run for run in await asyncio.gather(*tasks) if run is not None]
            runs += accepted
            await struck
            await answer_after_kill(http, [sidecar.base for sidecar in sidecars], accepted)
    return runs


KIND_WAIT = 20.0
"""Seconds past ``--kill-after`` the fault waits for a kind no run of which was accepted yet: on a loaded machine a
session's POST can take longer than the kill's delay, and a round that struck before any session was accepted
would test the responses alone."""


async def every_kind_accepted(tasks: list[asyncio.Task[Run | None]], kinds: set[str], wait: float) -> None:
    """Returns once each of ``kinds`` has an accepted run, every POST has ended, or ``wait`` seconds have passed."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and not all(task.done() for task in tasks):
        accepted = {run.kind for task in tasks if task.done() and (run := task.result()) is not None}
        if kinds <= accepted:
            return
        await asyncio.sleep(0.05)


async def answer_after_kill(http: aiohttp.ClientSession, bases: list[str], accepted: list[Run]) -> None:
    """The round's waiting sessions get their calls' results now, after the kill (through any of ``bases``)."""
    deadline = time.monotonic() + 60
    waiting = [run for run in accepted if run.kind == "waiting"]
    for run, why in zip(waiting, await asyncio.gather(*(answer_waiting(http, bases, run.id, run.marker, deadline)
                                                        for run in waiting)), strict=True):
        run.unanswered = why


def table(runs: list[Run], rounds: int) -> list[dict[str, Any]]:
    rows = []
    for round_no in range(1, rounds + 1):
        mine = [run for run in runs if run.round == round_no]
        outcomes = collections.Counter(run.outcome for run in mine)
        rows.append({"round": round_no, "accepted": len(mine),
                     "inputs": sum(len(run.inputs) for run in mine if run.kind in ("session", "waiting")),
                     "completed": outcomes["completed"], "failed": outcomes["failed"], "lost": outcomes["lost"],
                     "twice": outcomes["twice"], "limit": outcomes["limit"],
                     "resumed": sum(run.resumed for run in mine)})
    return rows


def print_report(runs: list[Run], rows: list[dict[str, Any]], search: SearXNG) -> None:
    columns = ("round", "accepted", "inputs", "completed", "failed", "lost", "twice", "limit", "resumed")
    print(" ".join(f"{name:>9}" for name in columns))
    for row in rows:
        print(" ".join(f"{row[name]:>9}" for name in columns))
    print(" ".join(f"{(sum(row[name] for row in rows) if name != 'round' else 'all'):>9}" for name in columns))
    kinds = collections.Counter(run.kind for run in runs)
    print(f"accepted by kind: {dict(kinds)}; 'inputs': session inputs accepted (each session: its first turn and "
          "the queued ones)")
    searched = [run for run in runs if run.kind == "search"]
    repeated = sum(search.queries[run.marker] > 1 for run in searched)
    print(f"searches: {sum(search.queries[run.marker] for run in searched)} for {len(searched)} tool loops; "
          f"{repeated} made again (a search whose turn the kill lost is repeated by design: a read)")
    limited = [run for run in runs if run.outcome == "limit"]
    if limited:
        print(f"{len(limited)} failed at the resume limit (by design), e.g. {limited[0].kind} {limited[0].id}: "
              f"{limited[0].detail}")
    for run in runs:
        if run.outcome not in ("completed", "limit"):
            print(f"  {run.outcome}: {run.kind} {run.id} (round {run.round}): {run.detail}")


async def probe(args: argparse.Namespace, workdir: str) -> tuple[list[Run], list[dict[str, Any]], SearXNG]:
    """Everything but the printing: start, the rounds, the check. Stops what it started."""
    upstream_port = free_port()
    upstream = ManagedProcess([sys.executable, "-m", "responses_bridge", "fake-upstream", "--port",
                               str(upstream_port)], "fake-upstream")
    search = SearXNG()
    upstream.start()
    env = {} if args.max_resumes is None else {"RESPONSES_BRIDGE_BACKGROUND_MAX_RESUMES": str(args.max_resumes)}
    server = None
    url: str | None = None
    if args.store == "postgres":
        url = args.database_url
        if url is None:
            from tests.support.postgres import start_server  # checkout-only: the tests' pgserver-run PostgreSQL

            server = start_server()
            server.create_database("crash_probe")
            url = server.url("crash_probe")
        env.update({"RESPONSES_BRIDGE_DATABASE_URL": url, "RESPONSES_BRIDGE_BACKGROUND_LEASE_SECONDS": "1"})
    sidecars = [Sidecar(f"http://127.0.0.1:{upstream_port}/v1", os.path.join(workdir, f"bridge-{name}.db"), "",
                        args.sidecar_log, dict(env)) for name in ("a", "b")[:2 if args.store == "postgres" else 1]]
    try:
        await wait_http(f"http://127.0.0.1:{upstream_port}/health", process=upstream)
        await search.start()
        async with prepared(args.fault, sidecars, url, outage=args.outage, skew=args.skew) as fault:
            for sidecar in sidecars:
                sidecar.env["RESPONSES_BRIDGE_WEB_SEARCH"] = f"searxng:{search.url}"
                await sidecar.start()
            runs = await run_rounds(sidecars, args, fault)
            await check(sidecars[0].base, runs, args.settle)
        if args.fault == "clock-skew":  # nobody died: a resumed run was a live one taken over
            for run in runs:
                if run.resumed and run.outcome == "completed":
                    run.outcome, run.detail = "twice", "resumed while its replica ran it: taken over"
        return runs, table(runs, args.rounds), search
    finally:
        for sidecar in sidecars:
            sidecar.stop()
        upstream.stop()
        await search.stop()
        if server is not None:
            server.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        runs, rows, search = asyncio.run(probe(args, args.keep))
    else:
        with tempfile.TemporaryDirectory(prefix="crash-probe-") as workdir:
            runs, rows, search = asyncio.run(probe(args, workdir))
    print_report(runs, rows, search)
    bad = [run for run in runs if run.outcome not in ("completed", "limit")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
