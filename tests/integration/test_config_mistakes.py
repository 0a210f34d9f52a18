"""Every configuration mistake ends the command with one line naming the flag, variable or file and key, what was
wrong and what is expected: the real CLI, run as a user runs it, with a clean environment and its own data
directory (so a command that would create a database there is caught doing it)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from pathlib import Path

import pytest

from responses_bridge.demo.procs import free_port
from tests.support import zygote
from tests.support.bridge import PYTHON
from tests.support.cli import clean_env, cli, one_line

pytestmark = pytest.mark.store_free  # its commands run with their own arguments: none reads the store switch

ROOT = Path(__file__).resolve().parents[2]
# the commands that read the sidecar's settings, each as a user would start it
SETTINGS_COMMANDS = [["serve", "--db", ":memory:"], ["envoy-config"], ["keys", "list", "--db", "keys.db"],
                     ["demo", "--upstream", "http://127.0.0.1:9/v1"]]


def command_name(argv: list[str]) -> str:
    return " ".join(argv[:2] if argv[0] == "keys" else argv[:1])


@pytest.mark.parametrize("argv", [["serve", "--db", ":memory:"], ["envoy-config"], ["demo"]], ids=lambda a: a[0])
def test_an_upstream_flag_without_a_scheme_names_the_flag(tmp_path: Path, argv: list[str]) -> None:
    line = one_line(cli(tmp_path, *argv, "--upstream", "localhost:18091"), argv[0])
    assert line == ("--upstream='localhost:18091': must be an http:// or https:// URL, e.g. "
                    "http://127.0.0.1:8000/v1")


def test_flags_that_leave_nothing_to_serve_are_one_line(tmp_path: Path) -> None:
    line = one_line(cli(tmp_path, "serve", "--no-http", "--no-extproc", "--db", ":memory:"), "serve")
    assert line == "--no-http and --no-extproc leave nothing to run; give at most one"


@pytest.mark.parametrize("argv", SETTINGS_COMMANDS, ids=lambda argv: argv[0])
@pytest.mark.parametrize(("variable", "value", "where", "expected"), [
    ("RESPONSES_BRIDGE_UPSTREAMS", "[{name: x}]", 3, "expected: JSON list of upstreams, e.g. [{"),
    ("RESPONSES_BRIDGE_TENANTS", "{acme: 1}", 2, "expected: JSON object of tenant name → limits, e.g. {"),
])
def test_broken_json_in_a_variable_is_one_line(tmp_path: Path, argv: list[str], variable: str, value: str,
                                               where: int, expected: str) -> None:
    line = one_line(cli(tmp_path, *argv, env={variable: value}), command_name(argv))
    assert line.startswith(f"{variable}={value!r}: not valid JSON (Expecting property name enclosed in double "
                           f"quotes at character {where}); {expected}"), line


@pytest.mark.parametrize("argv", SETTINGS_COMMANDS, ids=lambda argv: argv[0])
def test_a_missing_key_in_a_variables_json_is_named(tmp_path: Path, argv: list[str]) -> None:
    result = cli(tmp_path, *argv, env={"RESPONSES_BRIDGE_UPSTREAMS": '[{"name": "x"}]'})
    line = one_line(result, command_name(argv))
    assert line == ("RESPONSES_BRIDGE_UPSTREAMS: upstreams[0].url is missing (required: base URL ending in /v1)")


def test_a_bad_tenant_limit_names_the_variable_and_the_path(tmp_path: Path) -> None:
    result = cli(tmp_path, "envoy-config", env={"RESPONSES_BRIDGE_TENANTS": '{"acme": {"max_requests": 2}}'})
    assert one_line(result, "envoy-config") == (
        "RESPONSES_BRIDGE_TENANTS: tenants.acme.max_requests is not a known key; the keys are "
        "max_concurrent_requests, max_request_bytes, max_websocket_connections, max_stored_bytes, max_containers, "
        "max_sandboxes, retention_days")


@pytest.mark.parametrize(("text", "expected"), [
    ("upstreams:\n  - name: x\n", "upstreams[0].url is missing (required: base URL ending in /v1)"),
    ("upstreams:\n  - name: x\n    url: ftp://host/v1\n",
     "upstreams[0].url='ftp://host/v1': must be an http:// or https:// URL, e.g. http://127.0.0.1:8000/v1"),
    ("upstreams:\n  - name: x\n    url: http://a/v1\nmodels:\n  - match: m\n    upstream: y\n",
     "models[0].upstream: no upstream is named 'y'"),
])
def test_a_files_mistake_names_the_file_and_the_path(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text(text)
    for argv in (["serve", "--db", ":memory:"], ["envoy-config"]):
        line = one_line(cli(tmp_path, *argv, "--config", str(path)), argv[0])
        assert line == f"{path}: {expected}", line
        assert "{" not in line  # the object around a missing key is never shown as its value


def test_help_and_the_reference_show_what_a_user_writes(tmp_path: Path) -> None:
    result = cli(tmp_path, "serve", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for wrong in ("PydanticUndefined", "(default )", "(default ;", "responses_bridge.", "list[", "dict["):
        assert wrong not in text, wrong
    assert "RESPONSES_BRIDGE_UPSTREAMS (default none; JSON list of upstreams)" in text
    assert "RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS (default none; comma-separated hosts, IPs or CIDRs)" in text
    assert "RESPONSES_BRIDGE_STREAM_USAGE (default true; boolean)" in text
    reference = (ROOT / "docs" / "configuration.md").read_text()
    for wrong in ("PydanticUndefined", "responses_bridge.", "list[", "dict[", "`False`", "`True`"):
        assert wrong not in reference, wrong
    assert "| JSON list of upstreams | none |" in reference


@pytest.mark.parametrize("action", [["list"], ["revoke", "abc123"], ["create", "--tenant", "t"]])
def test_keys_never_creates_the_default_database(tmp_path: Path, action: list[str]) -> None:
    line = one_line(cli(tmp_path, "keys", *action), f"keys {action[0]}")
    default = tmp_path / "data" / "responses-bridge" / "responses-bridge.db"
    assert line.startswith(f"no database at {default} "), line
    assert "--db" in line
    assert not (tmp_path / "data").exists()


def test_keys_list_and_revoke_need_an_existing_named_database(tmp_path: Path) -> None:
    for action in (["list"], ["revoke", "abc123"]):
        line = one_line(cli(tmp_path, "keys", *action, "--db", "missing.db"), f"keys {action[0]}")
        assert line.startswith("no database at missing.db (--db)"), line
    line = one_line(cli(tmp_path, "keys", "list", env={"RESPONSES_BRIDGE_DB": "gone.db"}), "keys list")
    assert line.startswith("no database at gone.db (RESPONSES_BRIDGE_DB)"), line
    assert not (tmp_path / "missing.db").exists() and not (tmp_path / "gone.db").exists()


def test_keys_create_makes_a_new_database_only_where_named(tmp_path: Path) -> None:
    created = cli(tmp_path, "keys", "create", "--tenant", "t", "--db", "named.db")
    assert created.returncode == 0 and created.stdout.startswith("rbk_"), created.stderr
    listed = cli(tmp_path, "keys", "list", "--db", "named.db")
    assert listed.returncode == 0 and " t " in listed.stdout, listed.stderr
    line = one_line(cli(tmp_path, "keys", "create", "--tenant", "t", "--db", "no/such/dir.db"), "keys create")
    assert line == f"--db='no/such/dir.db': the directory {tmp_path / 'no' / 'such'} does not exist"
    line = one_line(cli(tmp_path, "keys", "list", "--db", ":memory:"), "keys list")
    assert line.startswith("--db=':memory:': keys need the database `serve` uses"), line


def test_a_probe_url_without_a_scheme_is_one_line(tmp_path: Path) -> None:
    line = one_line(cli(tmp_path, "probe", "localhost:18091", "--no-cache"), "probe")
    assert line == "URL 'localhost:18091': must be an http:// or https:// URL, e.g. http://127.0.0.1:8000/v1"


def test_a_taken_extproc_port_is_one_line_naming_the_port_and_the_flag(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli(tmp_path, "serve", "--extproc-port", str(port), "--http-port", str(free_port()),
                     "--db", ":memory:")
    line = one_line(result, "serve", status=1)  # a door that cannot open: 1, as for the HTTP door
    assert line == (f"the ext_proc door cannot listen on 127.0.0.1:{port}: Address already in use "
                    "(--extproc-port / RESPONSES_BRIDGE_EXTPROC_PORT)")


async def test_console_logs_have_no_colour_codes_in_a_file(tmp_path: Path) -> None:
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        process = zygote.popen([PYTHON, "-m", "responses_bridge", "serve", "--no-extproc", "--db", ":memory:",
                                "--http-port", str(free_port()), "--upstream", f"http://127.0.0.1:{free_port()}/v1"],
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                               env=clean_env(tmp_path, RESPONSES_BRIDGE_LOG_FORMAT="console"))
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while "upstream_unreachable" not in log_path.read_text():
            assert process.poll() is None, log_path.read_text()
            assert asyncio.get_running_loop().time() < deadline, log_path.read_text()
            await asyncio.sleep(0.05)
    finally:
        process.terminate()
        process.wait(timeout=30)
    text = log_path.read_text()
    assert "serving" in text and "{" not in text.splitlines()[0]  # the console format, not JSON
    assert "\x1b[" not in text
