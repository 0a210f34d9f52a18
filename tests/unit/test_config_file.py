"""The YAML configuration file: precedence (flags > environment > file > defaults), the one-line messages a bad
file gets, ``config check`` and ``config show`` (secrets masked) run as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from responses_bridge.cli import main
from responses_bridge.commands.config import MASK, mask
from responses_bridge.config.settings import SettingsError, load_settings
from tests.support import zygote


def write(tmp_path: Path, text: str, name: str = "bridge.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("RESPONSES_BRIDGE_") or name in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
            monkeypatch.delenv(name)


def test_the_file_sets_what_flags_and_environment_leave(tmp_path: Path) -> None:
    path = write(tmp_path, "upstream: http://file.example/v1/\nhttp_port: 9001\nprofile: llamacpp\n"
                           "drain_timeout: 5\n")
    settings = load_settings(config=path)
    assert (settings.upstream, settings.http_port, settings.profile) == ("http://file.example/v1", 9001, "llamacpp")
    assert settings.drain_timeout == 5.0 and settings.extproc_port == 50051  # a default the file leaves alone
    assert settings.engine_options().tool_result_role == "user"


def test_environment_wins_over_the_file_and_flags_over_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "http_port: 9001\nupstream: http://file.example/v1\nlog_level: debug\n")
    monkeypatch.setenv("RESPONSES_BRIDGE_HTTP_PORT", "9002")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://env.example/v1")
    settings = load_settings(config=path)
    assert (settings.http_port, settings.upstream, settings.log_level) == (9002, "http://env.example/v1", "debug")
    settings = load_settings(config=path, http_port=9003, upstream="http://flag.example/v1")
    assert (settings.http_port, settings.upstream, settings.log_level) == (9003, "http://flag.example/v1", "debug")


def test_the_file_can_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESPONSES_BRIDGE_CONFIG", write(tmp_path, "http_port: 9004\n"))
    assert load_settings().http_port == 9004
    assert load_settings(config=write(tmp_path, "http_port: 9005\n", "other.yaml")).http_port == 9005  # flag wins


def test_a_switch_set_in_the_file_wins_over_the_profile_of_the_environment(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESPONSES_BRIDGE_PROFILE", "llamacpp")
    options = load_settings(config=write(tmp_path, "profile: openai\ntool_result_role: tool\n")).engine_options()
    assert options.tool_result_role == "tool" and options.tool_call_content == "empty"  # env profile: llamacpp


def test_an_unquoted_null_switch_value_means_the_string(tmp_path: Path) -> None:
    settings = load_settings(config=write(tmp_path, "profile: llamacpp\ntool_call_content: null\n"))
    assert settings.engine_options().tool_call_content == "null"


@pytest.mark.parametrize(("text", "expected"), [
    ("http_port: eighty\n", "http_port='eighty': Input should be a valid integer"),
    ("profile: lmstudio\n", "profile='lmstudio': Input should be 'vllm', 'ollama', 'llamacpp', 'openai' or 'generic'"),
    ("drain_timeout: -1\n", "drain_timeout=-1: Input should be greater than or equal to 0"),
    ("htp_port: 8081\n", "unknown setting 'htp_port'"),
    ("http_port: [1\n", "not valid YAML"),
    ("- http_port: 1\n", "expected a mapping of settings at the top, got list"),
])
def test_a_bad_file_stops_the_start_with_one_line_naming_the_file_and_the_field(
        text: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, text)
    assert main(["serve", "--config", path, "--db", ":memory:"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"responses-bridge serve: {path}: ") and expected in err, err
    assert err.count("\n") == 1 and "Traceback" not in err and "validation error" not in err


def test_a_check_across_settings_says_the_file_was_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BRAVE_API_KEY", raising=False)
    path = write(tmp_path, "web_search: brave\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(config=path)
    assert str(caught.value) == ("RESPONSES_BRIDGE_WEB_SEARCH=brave needs BRAVE_API_KEY (or "
                                 f"RESPONSES_BRIDGE_BRAVE_API_KEY) in the environment (settings read from {path})")


def test_a_missing_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "nowhere.yaml")
    assert main(["serve", "--config", missing, "--db", ":memory:"]) == 2
    assert capsys.readouterr().err == f"responses-bridge serve: {missing}: no such configuration file " \
                                      "(RESPONSES_BRIDGE_CONFIG / --config)\n"


def test_a_bad_value_from_the_environment_names_the_variable_not_the_file(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESPONSES_BRIDGE_HTTP_PORT", "abc")
    with pytest.raises(SettingsError) as caught:
        load_settings(config=write(tmp_path, "http_port: 9001\n"))
    assert str(caught.value).startswith("RESPONSES_BRIDGE_HTTP_PORT='abc'")


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {key: value for key, value in os.environ.items()
            if not key.startswith("RESPONSES_BRIDGE_") and key not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    return zygote.run([sys.executable, "-m", "responses_bridge", *args], env={**base, **(env or {})}, timeout=60)


def test_config_check_validates_a_file_without_starting(tmp_path: Path) -> None:
    good = cli("config", "check", write(tmp_path, "http_port: 9001\nprofile: vllm\n"))
    assert good.returncode == 0 and good.stdout.strip().endswith("bridge.yaml: valid"), good
    bad_path = write(tmp_path, "http_port: 9001\nprofile: vllm\nmax_turns: 0\n", "bad.yaml")
    bad = cli("config", "check", bad_path)
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr == (f"responses-bridge config check: {bad_path}: max_turns=0: "
                          "Input should be greater than or equal to 1\n")


SECRETS = {"api_key": "sk-file-upstream-0001", "sealing_key": "c2VhbGluZy1rZXktdGhhdC1pcy1zZWNyZXQtMDAwMDA=",
           "brave_api_key": "brave-secret-0002"}


def test_config_show_prints_the_effective_configuration_with_secrets_masked(tmp_path: Path) -> None:
    lines = [f"{key}: {value}" for key, value in SECRETS.items()]
    path = write(tmp_path, "\n".join([*lines, "web_search: brave", "http_port: 9001", "profile: llamacpp",
                                      "developer_role: developer", ""]))
    shown = cli("config", "show", "--config", path, env={"RESPONSES_BRIDGE_HTTP_PORT": "9002",
                                                         "TAVILY_API_KEY": "tavily-secret-0003",
                                                         "XDG_DATA_HOME": str(tmp_path / "data")})
    assert shown.returncode == 0, shown.stderr
    for secret in [*SECRETS.values(), "tavily-secret-0003"]:
        assert secret not in shown.stdout
    effective, cached = yaml.safe_load_all(shown.stdout)
    assert effective["api_key"] == effective["sealing_key"] == effective["brave_api_key"] == MASK
    assert effective["tavily_api_key"] == MASK and effective["web_search"] == "brave"
    assert effective["http_port"] == 9002  # the environment over the file
    assert effective["profile"] == "llamacpp" and effective["tool_result_role"] == "user"  # the profile's value
    assert effective["developer_role"] == "developer"  # set one by one, over the profile
    assert effective["db"] is None and effective["upstream"] == "http://127.0.0.1:8090/v1"
    assert cached["probes"] == {} and [entry["url"] for entry in cached["serving"]] == ["http://127.0.0.1:8090/v1"]
    assert f"file ({path})" in shown.stdout.splitlines()[0]


def test_masking_reaches_nested_keys_and_leaves_forward_and_names_of_variables() -> None:
    config = {"upstreams": [{"name": "a", "api_key": "forward", "api_key_env": "LOCAL_KEY"},
                            {"name": "b", "api_key": "sk-literal"}],
              "mcp": {"token": "t0k"}, "max_tokens_field": "max_tokens", "api_key": None}
    assert mask(config) == {"upstreams": [{"name": "a", "api_key": "forward", "api_key_env": "LOCAL_KEY"},
                                          {"name": "b", "api_key": MASK}],
                            "mcp": {"token": MASK}, "max_tokens_field": "max_tokens", "api_key": None}
