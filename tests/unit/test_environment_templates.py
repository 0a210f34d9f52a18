"""An environment's files, setup commands and env checked, a template applied to a session's environment (omitted
fields inherited, network only narrowed), a template shown without its confidential fields, and the setup script
each command runs as (protocol/containers/environment_fields.py, protocol/containers/environment_templates.py,
services/agents/environments/setup.py)."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
from openai.types.beta.agents.environments import EnvironmentTemplate
from pydantic import TypeAdapter

from responses_bridge.protocol.containers.environment_fields import (
    MAX_INLINE_BYTES,
    check_env,
    check_files,
    check_setup_commands,
    container_path,
    workspace_path,
)
from responses_bridge.protocol.containers.environment_templates import (
    apply_template,
    check_params,
    shown_fields,
    template_object,
)
from responses_bridge.protocol.containers.environments import hosted_plan
from responses_bridge.protocol.errors import APIError
from responses_bridge.sealing import Sealer
from responses_bridge.services.agents.environments import templates as environment_templates
from responses_bridge.services.agents.environments.environments import network_within
from responses_bridge.services.agents.environments.setup import ENVIRONMENT, UNCLAIMED, EnvironmentSetup, setup_script
from responses_bridge.services.agents.environments.templates import TemplateService
from tests.unit.store_kinds import KINDS
from tests.unit.test_agent_store import agent_store


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def refused(call: Any) -> APIError:
    with pytest.raises(APIError) as caught:
        call()
    assert caught.value.status == 400
    return caught.value


def test_files_are_checked_and_their_paths_translated() -> None:
    files = check_files([{"type": "inline", "path": "/workspace/a/b.txt", "data": b64(b"abc")},
                         {"type": "file_id", "path": "/workspace/c", "file_id": "file-1"}], "files")
    assert files == [{"type": "inline", "data": b64(b"abc"), "size_bytes": 3, "path": "/workspace/a/b.txt"},
                     {"type": "file_id", "file_id": "file-1", "path": "/workspace/c"}]
    assert container_path("/workspace/a/b.txt") == "/mnt/data/a/b.txt"
    assert workspace_path("/mnt/data/a/b.txt") == "/workspace/a/b.txt"
    for path in ("/workspace", "/workspace/", "/workspace//a", "/workspace/./a", "/workspace/a/..", "relative",
                 "/workspace/.codex/x", "/workspace/.managed-agents-1/x", "/workspace/outputs", "/workspace/a\\b"):
        assert refused(lambda path=path: check_files([{"type": "inline", "path": path, "data": ""}],
                                                     "files")).param == "files[0].path", path
    # each path once, never a file and a directory of it
    for second in ("/workspace/a", "/workspace/a/b", "/workspace"):
        error = refused(lambda second=second: check_files([{"type": "inline", "path": "/workspace/a", "data": ""},
                                                           {"type": "inline", "path": second, "data": ""}],
                                                          "files"))
        assert error.param in ("files[1].path",), second
    assert refused(lambda: check_files([{"type": "inline", "path": "/workspace/a", "data": "@@"}],
                                       "f")).param == "f[0].data"
    assert refused(lambda: check_files([{"type": "inline", "path": "/workspace/a", "data": "", "x": 1}],
                                       "f")).param == "f[0].x"


def test_inline_files_are_bounded_together() -> None:
    half = b64(b"x" * (MAX_INLINE_BYTES // 2))
    check_files([{"type": "inline", "path": "/workspace/a", "data": half},
                 {"type": "inline", "path": "/workspace/b", "data": half}], "files")
    error = refused(lambda: check_files([{"type": "inline", "path": f"/workspace/{name}", "data": half}
                                         for name in "abc"], "files"))
    assert error.param == "files[2].data" and error.code == "file_too_large"


def test_setup_commands_and_env_are_checked() -> None:
    assert check_setup_commands([{"command": "make"}, {"command": "ls", "cwd": "/workspace/src"}], "s") == [
        {"command": "make", "cwd": "/workspace"}, {"command": "ls", "cwd": "/workspace/src"}]
    assert refused(lambda: check_setup_commands([{"command": "ls", "cwd": "/tmp"}], "s")).param == "s[0].cwd"
    assert refused(lambda: check_setup_commands([{"command": " "}], "s")).param == "s[0].command"
    assert refused(lambda: check_setup_commands("ls", "s")).param == "s"
    assert check_env({"A_1": "x"}, "env") == {"A_1": "x"}
    assert refused(lambda: check_env({"A-B": "x"}, "env")).param == "env.A-B"
    assert refused(lambda: check_env({"A": None}, "env")).param == "env.A"


def applied(params: dict, **environment: object) -> dict:
    return apply_template(params, {"type": "openai_hosted", **environment}, within=network_within)


def test_a_template_applies_under_the_sessions_own_fields() -> None:
    params = {"files": [{"type": "inline", "path": "/workspace/t", "data": ""}], "env": {"A": "1"},
              "network": {"access": "restricted", "allowed_domains": ["example.com", "Example.org"]}}
    merged = applied(params, environment_template_id="envtpl_1", env={"B": "2"}, files=None, container_size="small")
    assert merged == {"type": "openai_hosted", "files": params["files"], "env": {"B": "2"},
                      "network": params["network"], "container_size": "small"}
    narrowed = applied(params, network={"access": "restricted", "allowed_domains": ["example.org"]})
    assert hosted_plan(narrowed).allowed_domains == ("example.org",)
    assert hosted_plan(applied(params, network={"access": "disabled"})).access == "disabled"
    error = refused(lambda: applied(params, network={"access": "restricted",
                                                     "allowed_domains": ["example.com", "example.net"]}))
    assert error.param == "environment.network" and "example.net" in error.message
    error = refused(lambda: applied({}, network={"access": "restricted", "allowed_domains": ["example.com"]}))
    assert error.param == "environment.network"


def test_a_template_with_a_block_list_is_narrowed_never_broadened() -> None:
    blocking = {"network": {"access": "restricted", "blocked_domains": ["evil.example"]}}
    # an allowlist clear of the blocked names, or a longer block list, is narrower
    applied(blocking, network={"access": "restricted", "allowed_domains": ["example.com"]})
    applied(blocking, network={"access": "restricted", "blocked_domains": ["evil.example", "worse.example"]})
    # a name under a blocked one, an open network or a shorter block list broadens it
    for network in ({"access": "restricted", "allowed_domains": ["api.evil.example"]}, {"access": "enabled"},
                    {"access": "restricted", "blocked_domains": ["other.example"]}):
        assert refused(lambda network=network: applied(blocking, network=network)).param == "environment.network"
    # an allowlist template never holds a block list
    allowing = {"network": {"access": "restricted", "allowed_domains": ["example.com"]}}
    assert refused(lambda: applied(allowing, network={"access": "enabled"})).param == "environment.network"


def test_a_template_is_shown_without_its_confidential_fields() -> None:
    params = {"files": [{"type": "inline", "path": "/workspace/a", "data": b64(b"secret bytes")},
                        {"type": "file_id", "path": "/workspace/b", "file_id": "file-9"}],
              "env": {"TOKEN": "t0k3n"}, "setup_commands": [{"command": "echo hidden"}],
              "skills": [{"type": "skill_reference", "skill_id": "skill_1"}],
              "packages": {"python": []}}
    check_params(params)
    shown = template_object({"id": "envtpl_1", "name": None, "created_at": 1, "updated_at": 2,
                             "shown": shown_fields(params)})
    TypeAdapter(EnvironmentTemplate).validate_python(shown, strict=True)
    text = repr(shown)
    assert "t0k3n" not in text and "TOKEN" not in text and "hidden" not in text and b64(b"secret bytes") not in text
    assert shown["files"] == [{"type": "inline", "path": "/workspace/a", "size_bytes": 12},
                              {"type": "file_id", "file_id": "file-9", "path": "/workspace/b"}]
    assert shown["skills"] == [{"type": "skill_reference", "skill_id": "skill_1", "version": None}]
    assert shown["network"] == {"access": "disabled", "allowed_domains": []}
    # a template's fields are an environment's, named without its prefix
    assert refused(lambda: check_params({"plugins": [{}]})).param == "plugins[0]"
    assert refused(lambda: check_params({"env": {"1": "x"}})).param == "env.1"


def test_the_setup_script_runs_in_its_cwd_with_env_and_stops_the_rest_after_a_failure(tmp_path: Path) -> None:
    """The scripts run by /bin/sh as the sandbox would, with /mnt/data replaced by a scratch directory."""
    data = tmp_path / "data"
    mark = tmp_path / "failed"

    def run(command: dict[str, str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        script = setup_script(command, env).replace("/mnt/data", str(data)).replace("/tmp/.setup-failed",
                                                                                  str(mark))
        return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, check=False)

    env = {"GREETING": "it's $HOME; `x`"}  # quoted: never expanded or run
    done = run({"command": 'printf "%s" "$GREETING" > out.txt; pwd', "cwd": "/workspace/sub"}, env)
    assert done.returncode == 0 and done.stdout.strip() == str(data / "sub")
    assert (data / "sub" / "out.txt").read_text() == env["GREETING"]
    assert run({"command": "exit 3", "cwd": "/workspace"}, {}).returncode == 3
    assert run({"command": "touch after", "cwd": "/workspace"}, {}).returncode == 125  # skipped
    assert not (data / "after").exists()


@pytest.mark.parametrize("kind", KINDS)
async def test_templates_are_sealed_bounded_and_their_tenants(kind: str, request: pytest.FixtureRequest,
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    monkeypatch.setattr(environment_templates, "MAX_TEMPLATES_PER_TENANT", 2)
    async with agent_store(kind, request, tmp_path) as store:
        service = TemplateService(store, Sealer(os.urandom(32)))
        made = await service.create({"name": "t", "env": {"TOKEN": "t0k3n-at-rest"},
                                     "setup_commands": [{"command": "echo setup-at-rest"}]}, tenant="a")
        raw = orjson.dumps(await store.get("environment_template", made["id"], tenant="a"))
        assert b"t0k3n-at-rest" not in raw and b"setup-at-rest" not in raw and b"TOKEN" not in raw
        if kind == "sqlite":
            assert b"t0k3n-at-rest" not in b"".join(path.read_bytes() for path in tmp_path.glob("agents.db*"))
        # what a session resolves is what was given
        resolved = await service.resolve({"type": "openai_hosted", "environment_template_id": made["id"]},
                                         tenant="a")
        assert resolved["env"] == {"TOKEN": "t0k3n-at-rest"}
        assert resolved["setup_commands"] == [{"command": "echo setup-at-rest"}]
        # another tenant's template is not found, not listed, not usable, not changed
        for call in (service.get(made["id"], tenant="b"), service.update(made["id"], {"name": "x"}, tenant="b"),
                     service.delete(made["id"], tenant="b"),
                     service.resolve({"type": "openai_hosted", "environment_template_id": made["id"]},
                                     tenant="b")):
            with pytest.raises(APIError) as caught:
                await call
            assert caught.value.status == 404
        assert (await service.list_templates(after=None, limit=20, order="desc", tenant="b"))["data"] == []
        # an update replaces what it names, null resets, the rest is kept
        updated = await service.update(made["id"], {"env": None, "name": None}, tenant="a")
        assert updated["name"] is None
        resolved = await service.resolve({"type": "openai_hosted", "environment_template_id": made["id"]},
                                         tenant="a")
        assert "env" not in resolved and resolved["setup_commands"] == [{"command": "echo setup-at-rest"}]
        await service.create({}, tenant="a")
        with pytest.raises(APIError) as caught:
            await service.create({}, tenant="a")
        assert caught.value.status == 429 and caught.value.code == "template_limit_reached"
        await service.create({}, tenant="b")  # a tenant's bound is its own


class _LiveContainers:
    """What attach asks of the containers: each is live, a use is nothing."""

    async def live(self, container_id: str, *, tenant: str) -> object:
        return object()

    async def touch(self, container_id: str, *, tenant: str) -> None:
        return None


@pytest.mark.parametrize("kind", KINDS)
async def test_one_session_alone_takes_a_standalone_environment(kind: str, request: pytest.FixtureRequest,
                                                                tmp_path: Path) -> None:
    """Sessions asking for one environment at once, through as many processes' services (replicas on one
    database): the store's delete of its unclaimed record gives it to one of them."""
    async with agent_store(kind, request, tmp_path) as store:
        resource = {"id": "cntr_1", "type": "openai_hosted"}
        await store.put(ENVIRONMENT, "cntr_1", {"id": "cntr_1", "resource": resource}, tenant="a",
                        scope="standalone")
        await store.put(UNCLAIMED, "cntr_1", {"id": "cntr_1"}, tenant="a")
        replicas = [EnvironmentSetup(None, Sealer(os.urandom(32)), store) for _ in range(6)]
        outcomes = await asyncio.gather(*(
            replica.attach(_LiveContainers(), "cntr_1", f"sess_{n}", tenant="a")  # type: ignore[arg-type]
            for n, replica in enumerate(replicas)), return_exceptions=True)
        taken = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
        refused_codes = [outcome.code for outcome in outcomes if isinstance(outcome, APIError)]
        assert taken == [resource] and refused_codes == ["environment_in_use"] * 5
        with pytest.raises(APIError) as caught:  # another tenant's is not found
            await replicas[0].attach(_LiveContainers(), "cntr_1", "sess_x", tenant="b")  # type: ignore[arg-type]
        assert caught.value.status == 404
