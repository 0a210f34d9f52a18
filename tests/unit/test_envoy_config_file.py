"""``envoy-config --config FILE`` (or ``RESPONSES_BRIDGE_CONFIG``) renders from the file ``serve`` reads: one
cluster per upstream, the sidecar's ports from it unless a flag says otherwise; the result passes
``envoy --mode validate``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for tests.support

from responses_bridge.envoy_config import EXTPROC_CLUSTER, HTTP_CLUSTER, upstream_cluster
from tests.support import zygote
from tests.support.envoy import have_envoy, validate_config

CONFIG = {
    "http_port": 8123,
    "extproc_port": 50123,
    "upstreams": [{"name": "local", "url": "http://127.0.0.1:8000/v1", "profile": "vllm"},
                  {"name": "box", "url": "http://127.0.0.1:8001/v1", "mode": "native"}],
    "models": [{"match": "qwen*", "upstream": "local"}, {"match": "gpt-*", "upstream": "box"}],
}


def _render(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("RESPONSES_BRIDGE_")}
    return zygote.run([sys.executable, "-m", "responses_bridge", "envoy-config", *argv], timeout=120,
                      env={**clean, **(env or {})})


def _ports(bootstrap: dict) -> dict[str, int]:
    return {cluster["name"]: cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
            ["socket_address"]["port_value"] for cluster in bootstrap["static_resources"]["clusters"]}


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


@pytest.mark.skipif(not have_envoy(), reason="no envoy binary")
def test_the_file_gives_one_cluster_per_upstream_and_validates(config_file: Path, tmp_path: Path) -> None:
    result = _render("--config", str(config_file))
    assert result.returncode == 0, result.stderr
    ports = _ports(yaml.safe_load(result.stdout))
    assert ports[upstream_cluster("local")] == 8000 and ports[upstream_cluster("box")] == 8001
    assert (ports[HTTP_CLUSTER], ports[EXTPROC_CLUSTER]) == (8123, 50123)  # the sidecar's ports, from the file
    rendered = tmp_path / "envoy.yaml"
    rendered.write_text(result.stdout)
    checked = validate_config(rendered)
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-3000:]


def test_the_environment_names_the_file_and_flags_still_win(config_file: Path) -> None:
    result = _render("--http-port", "9000", env={"RESPONSES_BRIDGE_CONFIG": str(config_file)})
    assert result.returncode == 0, result.stderr
    ports = _ports(yaml.safe_load(result.stdout))
    assert ports[HTTP_CLUSTER] == 9000 and ports[EXTPROC_CLUSTER] == 50123
    assert {upstream_cluster("local"), upstream_cluster("box")} <= set(ports)


def test_without_a_file_it_renders_as_before() -> None:
    ports = _ports(yaml.safe_load(_render().stdout))
    assert (ports[HTTP_CLUSTER], ports[EXTPROC_CLUSTER]) == (8080, 50051)
    assert not any(name.startswith(upstream_cluster("")) for name in ports)


def test_an_invalid_file_is_one_line_naming_the_field_and_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"upstreams": [{"name": "x", "url": "ftp://nowhere"}]}))
    result = _render("--config", str(bad))
    assert result.returncode == 2 and result.stdout == ""
    assert "upstreams" in result.stderr and "bad.yaml" in result.stderr
