"""A mistyped ``RESPONSES_BRIDGE_*`` variable is never ignored in silence: each command that reads settings warns,
naming the closest variable the bridge knows, and ``--strict-env`` (``RESPONSES_BRIDGE_STRICT_ENV=1``) makes it
the one-line error of a configuration mistake. A near miss of the prefix itself counts too."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from responses_bridge.commands.env_check import known_names
from responses_bridge.demo.procs import free_port
from tests.support.bridge import PYTHON
from tests.support.cli import clean_env, cli, one_line

pytestmark = pytest.mark.store_free  # a clean environment (tests/support/cli.py): none reads the store switch

TYPOS = {"RESPONSES_BRIDGE_UPSTREM": "http://127.0.0.1:9/v1", "RESPONSE_BRIDGE_HTTP_PORT": "18080",
         "RESPONSES_BRIGDE_DB": "x.db"}


def test_each_mistyped_name_is_a_warning_naming_the_closest_one(tmp_path: Path) -> None:
    result = cli(tmp_path, "envoy-config", env=TYPOS)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# Envoy bootstrap")  # the command's own output is untouched
    assert result.stderr.splitlines() == [
        "responses-bridge envoy-config: warning: RESPONSES_BRIDGE_UPSTREM is not a setting, and is ignored; did you "
        "mean RESPONSES_BRIDGE_UPSTREAM?",
        "responses-bridge envoy-config: warning: RESPONSES_BRIGDE_DB is not a setting, and is ignored; did you mean "
        "RESPONSES_BRIDGE_DB?",
        "responses-bridge envoy-config: warning: RESPONSE_BRIDGE_HTTP_PORT is not a setting, and is ignored; did you "
        "mean RESPONSES_BRIDGE_HTTP_PORT?",
    ]


def test_serve_warns_before_it_starts(tmp_path: Path) -> None:
    process = subprocess.Popen([PYTHON, "-m", "responses_bridge", "serve", "--no-extproc", "--db", ":memory:",
                                "--http-port", str(free_port())], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               text=True, env=clean_env(tmp_path, RESPONSES_BRIDGE_UPSTREM="http://127.0.0.1:9/v1"))
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert first == ("responses-bridge serve: warning: RESPONSES_BRIDGE_UPSTREM is not a setting, and is ignored; "
                     "did you mean RESPONSES_BRIDGE_UPSTREAM?\n")


@pytest.mark.parametrize(("argv", "env"), [
    (["serve", "--db", ":memory:", "--strict-env"], {}),
    (["config", "show", "--strict-env"], {}),
    (["keys", "list", "--db", "keys.db"], {"RESPONSES_BRIDGE_STRICT_ENV": "1"}),
], ids=["serve", "config-show", "keys-by-variable"])
def test_strict_env_makes_it_one_line_and_exit_2(tmp_path: Path, argv: list[str], env: dict[str, str]) -> None:
    result = cli(tmp_path, *argv, env={"RESPONSE_BRIDGE_HTTP_PORT": "18080", **env})
    command = " ".join(argv[:2]) if argv[0] in ("keys", "config") else argv[0]
    assert one_line(result, command) == ("RESPONSE_BRIDGE_HTTP_PORT is not a setting; did you mean "
                                         "RESPONSES_BRIDGE_HTTP_PORT? (--strict-env / RESPONSES_BRIDGE_STRICT_ENV)")


def test_known_names_in_any_case_and_other_programs_variables_say_nothing(tmp_path: Path) -> None:
    result = cli(tmp_path, "envoy-config", "--strict-env", env={
        "responses_bridge_http_port": "18080", "RESPONSES_BRIDGE_CONFIG": "", "OPENAI_BASE_URL": "http://a/v1",
        "RESPONSES_API_URL": "elsewhere", "BRAVE_API_KEY": "k"})
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "port_value: 18080" in result.stdout  # read in lower case, as pydantic-settings reads it


def test_a_name_close_to_nothing_points_at_the_list(tmp_path: Path) -> None:
    result = cli(tmp_path, "envoy-config", env={"RESPONSES_BRIDGE_ZZZZZZZZZZZZZZZZZZZZ": "1"})
    assert result.stderr == ("responses-bridge envoy-config: warning: RESPONSES_BRIDGE_ZZZZZZZZZZZZZZZZZZZZ is not a "
                             "setting, and is ignored; the settings are listed by `responses-bridge serve --help`\n")


ROOT = Path(__file__).resolve().parents[2]


def test_every_name_the_scripts_and_the_bridge_read_is_known() -> None:
    """A name scripts/test, scripts/demo or .ci/run exports is in the environment of every bridge they start (CI's
    ``RESPONSES_BRIDGE_TEST_WORKERS`` once made every one-line error two lines): the check must know each of them."""
    read: set[str] = set()
    for path in [*(ROOT / "scripts").iterdir(), ROOT / ".ci" / "run", *(ROOT / "src").rglob("*.py")]:
        if path.is_file() and path.name != "env_check.py":  # whose docstring shows a typo
            read |= set(re.findall(r"RESPONSES_BRIDGE_[A-Z0-9_]*[A-Z0-9]\b(?![_*])", path.read_text()))
    assert read - known_names() == set()
