"""What a user tries first explains itself: every setting ``serve --help`` lists says what it is for, every
command's own ``--help`` has a description, the fake upstream's help explains the script its messages are, the
benchmark's options show their defaults, and a command that needs an action, given none, prints its help."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from responses_bridge.config.settings import Settings, env_names
from responses_bridge.serve import FLAGS
from tests.support.cli import cli

pytestmark = pytest.mark.store_free  # a clean environment (tests/support/cli.py): none reads the store switch


def test_every_setting_without_a_flag_says_what_it_is_for(tmp_path: Path) -> None:
    result = cli(tmp_path, "serve", "--help")
    assert result.returncode == 0, result.stderr
    listing = result.stdout.split("settings without a flag (environment only):", 1)[1]
    entries = re.split(r"\n  (?=[A-Z])", "\n" + listing)
    described = {}
    for entry in entries:
        head = re.match(r"\s*([A-Z0-9_]+)(?: / [A-Z0-9_]+)* \(default [^;]*; [^)]*\)(: )?", entry)
        if head is not None:
            described[head.group(1)] = bool(head.group(2)) and bool(entry[head.end():].strip())
    flagged = {field for _, field, _, _ in FLAGS}
    expected = {env_names(field)[0] for field in Settings.model_fields if field not in flagged}
    assert set(described) == expected
    assert [name for name, has_meaning in described.items() if not has_meaning] == []
    for name in ("RESPONSES_BRIDGE_DATABASE_URL", "RESPONSES_BRIDGE_UPSTREAM_IDLE_TIMEOUT",
                 "RESPONSES_BRIDGE_MAX_EVENT_BYTES", "RESPONSES_BRIDGE_UNSUPPORTED_TOOLS",
                 "RESPONSES_BRIDGE_CONTEXT_WINDOW", "RESPONSES_BRIDGE_SEALING_KEY", "RESPONSES_BRIDGE_WEB_SEARCH",
                 "RESPONSES_BRIDGE_MCP_CALL_TIMEOUT"):
        assert described[name], name


@pytest.mark.parametrize("argv", [["doctor"], ["keys", "list"], ["config", "check"], ["probe"], ["envoy-config"]])
def test_every_command_describes_itself(tmp_path: Path, argv: list[str]) -> None:
    result = cli(tmp_path, *argv, "--help")
    assert result.returncode == 0, result.stderr
    _, _, rest = result.stdout.partition("\n\n")
    description = rest.split("\n\n", 1)[0]
    assert not description.startswith(("options:", "positional arguments:")), result.stdout


def test_the_fake_upstreams_help_explains_its_script(tmp_path: Path) -> None:
    result = cli(tmp_path, "fake-upstream", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for directive in ("call NAME", "[error=CODE]", "[chunks=N]", "[think]", "[cut=K]", "[args=JSON]"):
        assert directive in text, directive
    assert "Echo: " in text


def test_the_benchmarks_options_show_their_defaults(tmp_path: Path) -> None:
    result = cli(tmp_path, "bench", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for option, default in (("--requests", 200), ("--concurrency", 32), ("--header-delay", 50),
                            ("--throughput-requests", 2000)):
        assert re.search(rf"{option} \S+ .*?\(default: {default}\)", text), option
    assert "(default: False)" not in text and "(default: None)" not in text


@pytest.mark.parametrize(("argv", "listed"), [([], ("serve", "config", "keys", "doctor")),
                                              (["config"], ("show", "check")),
                                              (["keys"], ("create", "list", "revoke"))])
def test_a_command_without_its_action_prints_its_help(tmp_path: Path, argv: list[str],
                                                      listed: tuple[str, ...]) -> None:
    result = cli(tmp_path, *argv)
    assert result.returncode == 2 and result.stdout == "", result
    assert "error:" not in result.stderr and "required" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"usage: responses-bridge {' '.join(argv)}".rstrip()), result.stderr
    for name in listed:
        assert re.search(rf"^\s+{name}\s", result.stderr, re.MULTILINE), name
