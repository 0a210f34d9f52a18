"""What ``responses-bridge demo`` prints once everything is up: where each part listens, and commands that run as
printed against those addresses.

The printed commands name the ports actually in use, never the defaults: a default port that something else held
was replaced by a free one (command.py's ``choose_ports``), and the banner says so first, loudly, because the
README's tour (``curl localhost:10000``) would otherwise reach whatever holds that port, not this demo.

The printed SDK example is a command that runs as printed: this Python with the ``openai`` package, which
``scripts/demo`` installs (the ``demo`` extra); without it the banner says how to install it first. It reads the key
with ``os.environ.get("OPENAI_API_KEY", "none")`` (a keyless backend such as Ollama needs none), and the curl
commands send one only when ``OPENAI_API_KEY`` is set.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import shlex
import sys
from dataclasses import dataclass, field

import orjson

from ..envoy_config import LISTEN_PORT

ROLES = {"listen": "Envoy's listener (clients call this)", "http": "the sidecar's HTTP door",
         "extproc": "the sidecar's ext_proc server", "upstream": "the fake upstream", "admin": "Envoy's admin"}


@dataclass
class Ports:
    listen: int
    http: int
    extproc: int
    upstream: int
    admin: int
    moved: dict[str, int] = field(default_factory=dict)
    """The ports that were taken by something else, by name (``listen``, ``http``, ...): the port wanted. A moved
    port is said loudly (banner.py): a README's ``curl localhost:10000`` would reach whatever holds it."""


def moved_ports(ports: Ports, fake: bool) -> list[str]:
    """One loud line per default port something else held, with the port used instead; empty when none moved."""
    lines = []
    for name, wanted in ports.moved.items():
        if name == "upstream" and not fake:
            continue  # no fake upstream is started
        lines.append(f"!! Port {wanted} is taken by another program: {ROLES[name]} is on port "
                     f"{getattr(ports, name)} instead.")
    if "listen" in ports.moved:
        wanted = ports.moved["listen"]
        tour = " (the README's tour)" if wanted == LISTEN_PORT else ""
        lines.append(f"!! Use the commands below as printed: localhost:{wanted}{tour} reaches that other program, "
                     "not this demo.")
    return lines


CODE_INPUT = "run: print(2 + 2)"
"""The code interpreter example's prompt: the fake model runs what follows ``run:`` (fake_code.py); a real model
reads it as the request it is."""
CODE_TOOL = {"type": "code_interpreter", "container": {"type": "auto"}}


def code_example(url: str, model: str, auth: str, sandbox_problem: str | None) -> list[str]:
    """The code interpreter seen working: a ``code_interpreter_call`` item with its logs (``include``), then the
    answer; or, where the sandbox cannot run here, why not and what to do, instead of a command that gets a 400."""
    if sandbox_problem is not None:
        return ["Code interpreter: refused on this machine (code never runs unsandboxed):",
                f"  {sandbox_problem}", "  `responses-bridge doctor` checks a host."]
    body = orjson.dumps({"model": model, "input": CODE_INPUT, "tools": [CODE_TOOL],
                         "include": ["code_interpreter_call.outputs"]}).decode()
    return ["Code interpreter (its code_interpreter_call item carries the logs; a ```python block works too):",
            f"  curl -s {url} -H 'content-type: application/json'{auth} -d {shlex.quote(body)}"]


SHELL_INPUT = "sh: ls -la /mnt/data && python3 --version"
"""The hosted shell example's prompt: the fake model runs what follows ``sh:`` as one command (fake_code.py)."""
SHELL_TOOL = {"type": "shell", "environment": {"type": "container_auto"}}


def shell_example(url: str, model: str, auth: str, shell_problem: str | None) -> list[str]:
    """The hosted shell seen working: a ``shell_call`` and its ``shell_call_output`` (each command's stdout,
    stderr and exit code), then the answer; or why it cannot run here (no sandbox, or no cgroup per call)."""
    if shell_problem is not None:
        return ["Hosted shell: refused on this machine (commands never run unsandboxed):", f"  {shell_problem}"]
    body = orjson.dumps({"model": model, "input": SHELL_INPUT, "tools": [SHELL_TOOL]}).decode()
    return ["Hosted shell (the shell_call_output item holds each command's output; `$ cmd` or a ```sh block too):",
            f"  curl -s {url} -H 'content-type: application/json'{auth} -d {shlex.quote(body)}"]


AGENTS_HEADERS = "-H 'OpenAI-Beta: agents=v1' -H 'content-type: application/json'"
DESKTOP_ENVIRONMENT = {"type": "openai_hosted", "desktop": {"enabled": True}}
DESKTOP_ACTIONS = [{"type": "screenshot"}]
SANDBOX_FIRST = "a desktop runs in the sandbox's cgroup mode, which the hosted shell's line above says is refused here"


def desktop_input(actions: list[dict[str, str]]) -> str:
    """The session's message that makes the fake model call ``computer`` with ``actions`` (fake_upstream.py's
    ``[args64=…]``: the arguments hold a list, whose ``]`` would end a plain ``[args=…]``)."""
    return f"call computer [args64={base64.b64encode(orjson.dumps({'actions': actions})).decode()}]"


def _session_commands(base: str, auth: str, agent: dict[str, object], session: dict[str, object]) -> list[str]:
    """An agent made, its id kept in ``$AGENT``, then a session on it whose first turn streams: two commands that
    run as printed in a POSIX shell (python3 reads the id)."""
    made = orjson.dumps(agent).decode()
    body = orjson.dumps({"agent_id": "AGENT_ID", **session, "stream": True}).decode()
    quoted = shlex.quote(body).replace("AGENT_ID", "'\"$AGENT\"'")
    return [f"  AGENT=$(curl -s {base}/v1/agents {AGENTS_HEADERS}{auth} -d {shlex.quote(made)} "
            "| python3 -c 'import json, sys; print(json.load(sys.stdin)[\"id\"])')",
            f"  curl -sN {base}/v1/agents/sessions {AGENTS_HEADERS}{auth} -d {quoted}"]


def agents_example(base: str, model: str, auth: str) -> list[str]:
    """OpenAI's Agents API through Envoy: an agent and a session whose first turn streams its events."""
    return ["Agents API (an agent, then a session whose first turn streams its events):",
            *_session_commands(base, auth, {"model": model, "name": "helper", "instructions": "Answer plainly."},
                               {"environment": {"type": "none"}, "input": "hello"})]


def desktop_example(base: str, model: str, auth: str, desktop_problem: str | None) -> list[str]:
    """A session with a desktop: the model's computer call takes a screenshot of a browser in the sandbox; the
    console's session page shows the screenshots and the desktop live. Or why no desktop runs here."""
    if desktop_problem is not None:
        return ["Desktop (computer use): refused on this machine:", f"  {desktop_problem}",
                "  `responses-bridge doctor` checks a host."]
    return ["Desktop (computer use: a browser in the sandbox; the console shows its screenshots and the desktop live):",
            *_session_commands(base, auth, {"model": model, "name": "browser", "tools": [{"type": "computer_use"}]},
                               {"environment": DESKTOP_ENVIRONMENT, "input": desktop_input(DESKTOP_ACTIONS)})]


def console_lines(http_port: int, console: str | None) -> list[str]:
    """Where the console is (the sidecar's HTTP door), or why it is off."""
    if console is not None:
        return [f"Console (logs, sessions, traces, usage, operations): {console}"]
    return [f"Console: off (RESPONSES_BRIDGE_CONSOLE=on, with the console extra, serves it at "
            f"http://127.0.0.1:{http_port}/console)"]


def banner(ports: Ports, upstream: str, config: str, db: str, model: str | None, fake: bool,
           db_kept: bool = True, problem: str | None = None, sandbox_problem: str | None = None,
           shell_problem: str | None = None, desktop_problem: str | None = None,
           console: bool = False) -> str:
    url = f"http://127.0.0.1:{ports.listen}/v1/responses"
    keyed = not fake and bool(os.environ.get("OPENAI_API_KEY"))  # a keyless backend (Ollama) gets no header
    auth = ' -H "Authorization: Bearer $OPENAI_API_KEY"' if keyed else ""
    key = '"x"' if fake else 'os.environ.get("OPENAI_API_KEY", "none")'
    headline = ("responses-bridge demo is ready." if problem is None else
                f"responses-bridge demo is running, but its upstream {upstream} {problem}.")
    moved = moved_ports(ports, fake)
    lines = [
        "",
        *([*moved, ""] if moved else []),
        headline,
        f"  Envoy (clients call this)  http://127.0.0.1:{ports.listen}    admin http://127.0.0.1:{ports.admin}",
        f"  sidecar HTTP door          http://127.0.0.1:{ports.http}    ext_proc 127.0.0.1:{ports.extproc}",
        f"  upstream                   {upstream}{'  (fake)' if fake else ''}",
        f"  Envoy bootstrap            {config}",
        f"  stored responses           {db}{'' if db_kept else '  (temporary)'}",
        *console_lines(ports.http, f"http://127.0.0.1:{ports.http}/console" if console else None),
        "",
    ]
    if model is None:
        lines += ["No model to name in the examples (the upstream listed none): run the demo again with --model NAME.",
                  ""]
    else:
        plain = orjson.dumps({"model": model, "input": "Hello from the Responses API!"}).decode()
        stream = orjson.dumps({"model": model, "input": "Stream this, please.", "stream": True}).decode()
        lines += [
            "Non-streaming:",
            f"  curl -s {url} -H 'content-type: application/json'{auth} -d {shlex.quote(plain)}",
            "",
            "Streaming (Server-Sent Events):",
            f"  curl -N {url} -H 'content-type: application/json'{auth} -d {shlex.quote(stream)}",
            "",
            *code_example(url, model, auth, sandbox_problem),
            "",
            *shell_example(url, model, auth, sandbox_problem or shell_problem),
            "",
            *agents_example(f"http://127.0.0.1:{ports.listen}", model, auth),
            "",
            *desktop_example(f"http://127.0.0.1:{ports.listen}", model, auth,
                             SANDBOX_FIRST if sandbox_problem or shell_problem else desktop_problem),
            "",
            *sdk_example(ports.listen, model, key),
            "",
        ]
    if moved:
        lines += [moved[0], ""]  # once more where the eye lands last
    lines.append("Press Ctrl-C to stop.")
    return "\n".join(lines)


def sdk_example(port: int, model: str, key: str) -> list[str]:
    """The OpenAI SDK example as a command to paste: this interpreter has the SDK (or is told to get it)."""
    code = (f'import os; from openai import OpenAI; '
            f'client = OpenAI(base_url="http://127.0.0.1:{port}/v1", api_key={key}); '
            f'print(client.responses.create(model="{model}", input="Hi!").output_text)')
    lines = ["With the OpenAI SDK (Python):"]
    if importlib.util.find_spec("openai") is None:
        lines.append(f"  {shlex.quote(sys.executable)} -m pip install openai   # not installed here yet")
    lines.append(f"  {shlex.quote(sys.executable)} -c {shlex.quote(code)}")
    return lines
