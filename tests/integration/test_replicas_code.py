"""The code interpreter across replicas on one PostgreSQL (the fixtures of test_replicas.py): a file the code writes
through replica A is laid out for the next call through replica B (the container's files are in the database,
materialised into each call's sandbox and written back after it), and the Containers API answers the same on
both; a skill made through A is served through B and laid out for its calls."""

from __future__ import annotations

import base64
import io
import os
import zipfile

import orjson
import pytest

from responses_bridge.sandbox.doctor import check_bubblewrap
from tests.integration.test_replicas import database_url, pytestmark, replicas, sdk
from tests.support.replicas import Replica

__all__ = ["database_url", "pytestmark", "replicas"]  # the module fixtures, shared with test_replicas.py

needs_sandbox = pytest.mark.skipif(check_bubblewrap()[1] is not None and not os.environ.get("CI"),
                                   reason="bubblewrap cannot sandbox here")


def run_code(code: str) -> str:
    return "call python [args64=" + base64.b64encode(orjson.dumps({"code": code})).decode() + "]"


@needs_sandbox
async def test_a_file_written_through_a_is_read_through_b(replicas: list[Replica]) -> None:
    a, b = replicas
    async with sdk(a) as on_a, sdk(b) as on_b:
        container = await on_a.containers.create(name="shared")
        tools = [{"type": "code_interpreter", "container": container.id}]
        first = await on_a.responses.create(model="fake-model", tools=tools,  # type: ignore[arg-type]
                                            input=run_code("open('/mnt/data/shared.txt', 'w').write('from A')"))
        assert first.output[0].status == "completed"
        second = await on_b.responses.create(model="fake-model", tools=tools,  # type: ignore[arg-type]
                                             include=["code_interpreter_call.outputs"],
                                             input=run_code("print(open('/mnt/data/shared.txt').read())"))
        assert second.output[0].outputs[0].logs == "from A\n"
        listed = [file async for file in on_b.containers.files.list(container.id)]
        assert [file.path for file in listed] == ["/mnt/data/shared.txt"] and listed[0].source == "assistant"
        content = await on_b.containers.files.content.retrieve(listed[0].id, container_id=container.id)
        assert content.read() == b"from A"
        await on_b.containers.delete(container.id)
        assert container.id not in [c.id async for c in on_a.containers.list()]


@needs_sandbox
async def test_a_file_a_shell_command_writes_through_a_is_there_for_the_next_through_b(
        replicas: list[Replica]) -> None:
    """The hosted shell takes the same container → sandbox path: its files are the container's, on any replica."""
    a, b = replicas
    async with sdk(a) as on_a, sdk(b) as on_b:
        container = await on_a.containers.create(name="shared shell")
        tools = [{"type": "shell", "environment": {"type": "container_reference", "container_id": container.id}}]
        first = await on_a.responses.create(model="fake-model", tools=tools,  # type: ignore[arg-type]
                                            input="sh: echo from A > made.txt && cat made.txt")
        assert first.output[1].output[0].stdout == "from A\n"  # type: ignore[union-attr]
        second = await on_b.responses.create(model="fake-model", tools=tools,  # type: ignore[arg-type]
                                             input="sh: cat /mnt/data/made.txt; ls")
        assert second.output[1].output[0].stdout == "from A\nmade.txt\n"  # type: ignore[union-attr]
        assert second.output[0].environment.container_id == container.id  # type: ignore[union-attr]


def _skill_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("SKILL.md", "---\nname: shared-skill\ndescription: Made on A.\n---\n")
        archive.writestr("data.txt", "from the skill")
    return out.getvalue()


@needs_sandbox
async def test_a_skill_made_through_a_is_served_and_laid_out_through_b(replicas: list[Replica]) -> None:
    """A skill's bytes are in the shared database: B lists it, serves its zip, makes a container with it and lays
    it out read-only for the code interpreter."""
    a, b = replicas
    async with sdk(a) as on_a, sdk(b) as on_b:
        skill = await on_a.skills.create(files=("s.zip", _skill_zip(), "application/zip"))
        assert skill.id in [found.id async for found in on_b.skills.list()]
        assert (await on_b.skills.content.retrieve(skill.id)).read() == (
            await on_a.skills.content.retrieve(skill.id)).read()
        container = await on_b.containers.create(name="with a skill", skills=[  # type: ignore[list-item]
            {"type": "skill_reference", "skill_id": skill.id}])
        response = await on_a.responses.create(
            model="fake-model", tools=[{"type": "code_interpreter", "container": container.id}],  # type: ignore[list-item]
            include=["code_interpreter_call.outputs"],
            input=run_code("print(open('/mnt/skills/shared-skill/data.txt').read())"))
        assert response.output[0].outputs[0].logs == "from the skill\n"
        await on_a.skills.delete(skill.id)


@needs_sandbox
async def test_a_network_policy_made_through_a_holds_for_a_call_through_b(replicas: list[Replica]) -> None:
    """The policy is the container's, in the shared database, its secret sealed with the replicas' shared key: B
    opens it and runs the call under it (the proxy's variables and the secret's placeholder, never the value)."""
    a, b = replicas
    secret = "replica-secret-value"
    policy = {"type": "allowlist", "allowed_domains": ["api.example.com"],
              "domain_secrets": [{"domain": "api.example.com", "name": "API_KEY", "value": secret}]}
    async with sdk(a) as on_a, sdk(b) as on_b:
        container = await on_a.containers.create(name="with policy", network_policy=policy)  # type: ignore[arg-type]
        shown = await on_b.containers.retrieve(container.id)
        assert shown.network_policy is not None and shown.network_policy.allowed_domains == ["api.example.com"]
        code = "import json, os\nprint(json.dumps([os.environ.get('HTTPS_PROXY'), os.environ.get('API_KEY')]))"
        answer = await on_b.responses.create(model="fake-model", input=run_code(code),
                                             tools=[{"type": "code_interpreter", "container": container.id}],
                                             include=["code_interpreter_call.outputs"])  # type: ignore[list-item]
        proxy, placeholder = orjson.loads(answer.output[0].outputs[0].logs)
        assert proxy == "http://127.0.0.1:3128" and placeholder.startswith("egress-secret-")
        assert secret not in answer.model_dump_json()
        await on_b.containers.delete(container.id)
