"""The command line as a new user meets it: ``--version``, ``serve --help``, a bad environment value, the ports
``serve`` and ``envoy-config`` pick by default, and YAML that can be copied out in parts."""

from __future__ import annotations

import re
import socket
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from responses_bridge import envoy_config
from responses_bridge.cli import build_parser, main
from responses_bridge.config.settings import Settings, SettingsError, env_names, load_settings
from responses_bridge.serve import FLAGS
from tests.support import zygote

ROOT = Path(__file__).resolve().parents[2]


def test_version_comes_from_the_package_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"responses-bridge {version('responses-bridge')}"


def serve_help(capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines: compare with spaces normalised


def test_serve_help_names_every_environment_variable(capsys: pytest.CaptureFixture[str]) -> None:
    text = serve_help(capsys)
    for flag, field, _, _ in FLAGS:
        names = ", ".join(env_names(field))
        assert f"(env: {names}" in text, flag
    epilog = text.split("settings without a flag (environment only):", 1)[1]
    flagged = {field for _, field, _, _ in FLAGS}
    for field in Settings.model_fields:  # a setting added later shows up without touching serve.py
        if field not in flagged:
            assert f"{' / '.join(env_names(field))} (default" in epilog, field
    assert "RESPONSES_BRIDGE_DRAIN_TIMEOUT (default 30; number)" in epilog
    assert "PydanticUndefined" not in text and "(default )" not in text and "responses_bridge." not in epilog


@pytest.mark.parametrize(("variable", "value"), [("RESPONSES_BRIDGE_HTTP_PORT", "abc"),
                                                 ("RESPONSES_BRIDGE_DRAIN_TIMEOUT", "-1"),
                                                 ("RESPONSES_BRIDGE_LOG_FORMAT", "xml")])
def test_a_bad_environment_value_is_one_line(variable: str, value: str, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(variable, value)
    assert main(["serve", "--db", ":memory:"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"responses-bridge serve: {variable}={value!r}: "), err
    assert "Traceback" not in err and "validation error" not in err


def test_a_bad_flag_value_names_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESPONSES_BRIDGE_HTTP_PORT", "9000")  # valid, and overridden by the flag
    with pytest.raises(SettingsError) as caught:
        load_settings({"http_port": "--http-port"}, http_port="abc")
    assert str(caught.value).startswith("--http-port='abc': ")


def test_a_bad_environment_value_from_the_shell() -> None:
    """What the user sees in a terminal: one line on stderr, exit status 2, nothing on stdout."""
    result = zygote.run([sys.executable, "-m", "responses_bridge", "serve", "--db", ":memory:"], timeout=60,
                        env={"PATH": "/usr/bin:/bin", "RESPONSES_BRIDGE_HTTP_PORT": "abc"})
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        ("responses-bridge serve: RESPONSES_BRIDGE_HTTP_PORT='abc': Input should be a valid integer, unable to "
         "parse string as an integer")]


def test_envoy_config_defaults_fit_serve_defaults() -> None:
    args = build_parser().parse_args(["envoy-config"])
    settings = Settings()
    assert args.http_port is None and args.extproc_port is None  # taken from the settings `serve` reads
    assert (settings.http_port, settings.extproc_port) == (8080, 50051)
    assert args.listen_port == envoy_config.LISTEN_PORT == 10000
    assert args.listen_port not in (settings.http_port, settings.extproc_port)


def test_rendered_yaml_has_no_anchors() -> None:
    text = envoy_config.render_bootstrap(listen_port=10000, extproc_port=50051, http_port=8080,
                                         upstream="http://127.0.0.1:8090/v1")
    assert not re.search(r"[&*]id\d+", text)
    config = yaml.safe_load(text)
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    copied = yaml.safe_load(yaml.safe_dump(routes[1]))  # one route, copied out alone, is complete
    assert copied["match"]["headers"][0] == {"name": ":method", "string_match": {"exact": "POST"}}
    for path in (ROOT / "envoy" / "envoy-demo.yaml", ROOT / "deploy/kubernetes/overlays/istio/istio.yaml",
                 ROOT / "deploy/kubernetes/overlays/envoy-gateway/envoy-gateway.yaml"):
        assert not re.search(r"[&*]id\d+", path.read_text()), path


def test_sidecar_route_failure_names_the_http_door() -> None:
    config = envoy_config.bootstrap_dict(listen_port=10000, extproc_port=50051, http_port=8123,
                                         upstream="http://127.0.0.1:8090/v1")
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    codes = [mapper["body_format_override"]["json_format"]["error"]["code"]
             for mapper in hcm["local_reply_config"]["mappers"]]
    # only Envoy's timeouts come first: a cut for idleness is not a door that is down
    assert codes[:3] == ["gateway_timeout", "processor_timeout", "sidecar_unavailable"]
    error = hcm["local_reply_config"]["mappers"][2]["body_format_override"]["json_format"]["error"]
    assert "127.0.0.1:8123" in error["message"] and "--http-port 8123" in error["message"]
    assert "model server" not in error["message"] and "upstream" not in error["message"]


def test_demo_installs_the_sdk_it_prints() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(requirement.startswith("openai") for requirement in extras["demo"])
    assert "VENV_EXTRAS=demo" in (ROOT / "scripts" / "demo").read_text()


def test_a_taken_port_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = zygote.run([sys.executable, "-m", "responses_bridge", "serve", "--no-extproc", "--http-port",
                             str(port), "--db", ":memory:", "--log-level", "error"], timeout=60)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        (f"responses-bridge serve: the HTTP door cannot listen on 127.0.0.1:{port}: Address already in use "
         "(--http-port / RESPONSES_BRIDGE_HTTP_PORT)")]


def test_the_benchmark_outside_a_checkout_names_its_command_in_one(monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str],
                                                                    tmp_path: Path) -> None:
    """An installed package has no tools/ beside it: ``responses-bridge bench`` says where the benchmark is run."""
    from responses_bridge import cli

    monkeypatch.setattr(cli, "__file__", str(tmp_path / "site-packages" / "responses_bridge" / "cli.py"))
    assert main(["bench", "--envoy"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.endswith("run it from a source checkout of responses-bridge (scripts/bench latency)")
