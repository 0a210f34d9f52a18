"""The code interpreter across replicas on one PostgreSQL (the fixtures of test_replicas.py): a file the code writes
through replica A is laid out for the next call through replica B (the container's files are in the database,
materialised into each call's sandbox and written back after it), and the Containers API answers the same on
both."""

from __future__ import annotations

import base64
import os

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
