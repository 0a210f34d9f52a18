"""What ``responses-bridge demo`` prints (demo/banner.py), without starting the demo: a default port held by
another program is said loudly, with the port used instead, and every printed command uses the ports in use."""

from __future__ import annotations

import re
import shlex
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import orjson

from responses_bridge.demo import command as demo
from responses_bridge.demo.banner import moved_ports
from responses_bridge.demo.fake_code import requested_code, requested_command
from responses_bridge.demo.procs import free_port


@contextmanager
def _held(port: int) -> Iterator[None]:
    """Another program listening on ``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield


def _banner(ports: demo.Ports, model: str | None = "fake-model") -> str:
    return demo.banner(ports, f"http://127.0.0.1:{ports.upstream}/v1", "/tmp/envoy.yaml", "/tmp/db.sqlite", model,
                       fake=True)


def test_a_taken_listen_port_is_said_loudly_and_the_commands_use_the_one_in_use() -> None:
    wanted = free_port()
    with _held(wanted):
        ports = demo.choose_ports(wanted)
    assert ports.listen != wanted and ports.moved["listen"] == wanted
    text = _banner(ports)
    first = text.strip().splitlines()[0]
    assert first.startswith("!!") and f"Port {wanted} is taken" in first and f"port {ports.listen} instead" in first
    assert f"localhost:{wanted} reaches that other program, not this demo" in text
    commands = [line for line in text.splitlines() if "127.0.0.1:" in line and ("curl" in line or "OpenAI(" in line)]
    assert commands
    for line in commands:
        assert set(re.findall(r"127\.0\.0\.1:(\d+)", line)) == {str(ports.listen)}, line
    assert text.rstrip().splitlines()[-3].startswith("!!")  # said again at the end, above "Press Ctrl-C"


def test_the_readmes_port_is_named_as_the_tours() -> None:
    ports = demo.Ports(listen=free_port(), http=8080, extproc=50051, upstream=8090, admin=9901,
                       moved={"listen": 10000})
    assert "localhost:10000 (the README's tour) reaches that other program" in _banner(ports)


def test_free_ports_are_not_mentioned() -> None:
    ports = demo.Ports(listen=free_port(), http=free_port(), extproc=free_port(), upstream=free_port(),
                       admin=free_port())
    text = _banner(ports)
    assert "!!" not in text and "taken" not in text


def test_a_real_upstream_does_not_report_the_fake_upstreams_port() -> None:
    ports = demo.Ports(listen=10000, http=8080, extproc=50051, upstream=free_port(), admin=9901,
                       moved={"upstream": 8090})
    assert moved_ports(ports, fake=False) == []
    assert moved_ports(ports, fake=True) == [
        f"!! Port 8090 is taken by another program: the fake upstream is on port {ports.upstream} instead."]


def test_the_code_interpreter_is_shown_or_its_absence_explained() -> None:
    """The five-minute tour's code interpreter: a command whose prompt the fake model runs as code, asking for the
    call's logs; where the sandbox cannot run, the reason instead of a command that would get a 400."""
    ports = demo.Ports(listen=free_port(), http=8080, extproc=50051, upstream=8090, admin=9901)
    lines = _banner(ports).splitlines()
    line = lines[next(i for i, x in enumerate(lines) if x.startswith("Code interpreter")) + 1]
    body = orjson.loads(shlex.split(line)[-1])
    assert body["tools"] == [{"type": "code_interpreter", "container": {"type": "auto"}}]
    assert body["include"] == ["code_interpreter_call.outputs"]
    assert requested_code(body["input"]) == "print(2 + 2)"
    refused = demo.banner(ports, "u", "c", "d", "fake-model", fake=True, sandbox_problem="bwrap is not on PATH")
    assert "code_interpreter" not in refused and "bwrap is not on PATH" in refused
    assert "responses-bridge doctor" in refused


def test_the_hosted_shell_is_shown_or_its_absence_explained() -> None:
    """The hosted shell beside it: a command whose prompt the fake model runs as a shell command in a
    ``container_auto``; where commands cannot run (no sandbox, or no cgroup per call), why not instead."""
    ports = demo.Ports(listen=free_port(), http=8080, extproc=50051, upstream=8090, admin=9901)
    lines = _banner(ports).splitlines()
    line = lines[next(i for i, x in enumerate(lines) if x.startswith("Hosted shell")) + 1]
    body = orjson.loads(shlex.split(line)[-1])
    assert body["tools"] == [{"type": "shell", "environment": {"type": "container_auto"}}]
    assert requested_command(body["input"]) == "ls -la /mnt/data && python3 --version"
    no_cgroup = demo.banner(ports, "u", "c", "d", "fake-model", fake=True, shell_problem="no cgroup here")
    assert '"type":"shell"' not in no_cgroup and "no cgroup here" in no_cgroup
    assert '"type":"code_interpreter"' in no_cgroup  # Python still runs in the single-process mode
    no_sandbox = demo.banner(ports, "u", "c", "d", "fake-model", fake=True, sandbox_problem="bwrap is not on PATH")
    assert '"type":"shell"' not in no_sandbox and no_sandbox.count("bwrap is not on PATH") == 2


def test_the_agents_api_the_desktop_and_the_console_are_shown() -> None:
    """The tour goes on to OpenAI's Agents API (an agent, then a session streaming its first turn), a session with a
    desktop (the fake model's computer call takes a screenshot), and the console on the sidecar's HTTP door; each
    command is two lines a POSIX shell runs as printed (the agent's id kept in ``$AGENT``)."""
    ports = demo.Ports(listen=free_port(), http=8080, extproc=50051, upstream=8090, admin=9901)
    text = demo.banner(ports, "u", "c", "d", "fake-model", fake=True, console=True)
    lines = text.splitlines()
    assert "Console (logs, sessions, traces, usage, operations): http://127.0.0.1:8080/console" in lines
    for title, environment in (("Agents API", {"type": "none"}),
                               ("Desktop", {"type": "openai_hosted", "desktop": {"enabled": True}})):
        at = next(i for i, line in enumerate(lines) if line.startswith(title))
        made, session = shlex.split(lines[at + 1]), shlex.split(lines[at + 2])
        assert made[0].startswith("AGENT=$(curl") and f"http://127.0.0.1:{ports.listen}/v1/agents" in made
        body = orjson.loads(session[-1].replace("$AGENT", "agent_x"))
        assert body["agent_id"] == "agent_x" and body["environment"] == environment and body["stream"] is True
    desktop = orjson.loads(shlex.split(lines[next(i for i, x in enumerate(lines) if x.startswith("Desktop")) + 2])[-1])
    assert desktop["input"].startswith("call computer [args64=")
    off = demo.banner(ports, "u", "c", "d", "fake-model", fake=True, desktop_problem="no Xvfb here")
    assert "Console: off" in off and "no Xvfb here" in off and '"desktop"' not in off
