"""Two tenants against every Containers endpoint, the code interpreter and the hosted shell, with
``RESPONSES_BRIDGE_AUTH=header``: no read, list, upload, download or delete of the other tenant's containers or
files, a request naming the other tenant's container is refused as one naming a container that never existed (byte
for byte the same error), and
the per-tenant limits hold, also under requests at once: ``max_containers`` for containers made through
``/v1/containers`` and by the code interpreter's ``auto``, and ``max_stored_bytes`` as one budget for a tenant's
files and container files together."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import aiohttp
import openai
import orjson
import pytest

from responses_bridge.demo.procs import wait_http
from responses_bridge.sandbox.doctor import check_bubblewrap
from tests.support.bridge import Sidecar, start_sidecar
from tests.support.sdk import async_sdk

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_replicas_code.py",
    "tests/unit/test_tenancy_files_store.py",
    "tests/unit/test_containers_service.py",
    "tests/integration/test_agents_automations_replicas.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

A, B, FEW = "tenant-a", "tenant-b", "tenant-few"
THREE, AUTO_THREE = "tenant-three", "tenant-auto-three"  # may keep 3 live containers each
BUDGET = "tenant-budget"  # may keep 5500 bytes of files and container files together
TENANTS = {FEW: {"max_containers": 1}, THREE: {"max_containers": 3}, AUTO_THREE: {"max_containers": 3},
           BUDGET: {"max_stored_bytes": 5500}}


@pytest.fixture(scope="module")
async def bridge(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sidecar]:
    env = {"RESPONSES_BRIDGE_AUTH": "header",
           "RESPONSES_BRIDGE_TENANTS": orjson.dumps(TENANTS).decode()}
    process, http_port, _ = start_sidecar(str(tmp_path_factory.mktemp("tenancy-containers")), fake_upstream,
                                          env=env, extproc=False)
    try:
        url = f"http://127.0.0.1:{http_port}"
        await wait_http(f"{url}/health", process=process, headers={"x-tenant-id": A})
        yield Sidecar(fake_upstream, url, 0, process)
    finally:
        process.stop()


def sdk(bridge: Sidecar, tenant: str) -> openai.AsyncOpenAI:
    return async_sdk(base_url=f"{bridge.http_url}/v1", api_key="sk-unused", max_retries=0, timeout=60,
                              default_headers={"x-tenant-id": tenant})


async def call(bridge: Sidecar, tenant: str, method: str, path: str, body: object = None) -> tuple[int, bytes]:
    async with aiohttp.ClientSession(bridge.http_url) as http, http.request(
            method, path, headers={"x-tenant-id": tenant},
            data=orjson.dumps(body) if body is not None else None) as response:
        return response.status, await response.read()


async def test_the_other_tenants_containers_are_as_if_they_did_not_exist(bridge: Sidecar) -> None:
    async with sdk(bridge, A) as a:
        container = await a.containers.create(name="private")
        file = await a.containers.files.create(container.id, file=("secret.txt", b"only for a"))
    base = f"/v1/containers/{container.id}"
    missing = "/v1/containers/cntr_" + "0" * 32
    for method, path in (("GET", base), ("GET", f"{base}/files"), ("GET", f"{base}/files/{file.id}"),
                         ("GET", f"{base}/files/{file.id}/content"), ("DELETE", f"{base}/files/{file.id}"),
                         ("DELETE", base)):
        status, body = await call(bridge, B, method, path)
        assert status == 404, (method, path, body)
        twin_status, twin = await call(bridge, B, method, path.replace(base, missing))
        assert (status, body.replace(container.id.encode(), b"X")) == (twin_status,
                                                                       twin.replace(missing[15:].encode(), b"X"))
    status, _ = await call(bridge, B, "POST", f"{base}/files", {"file_id": "file-" + "0" * 32})
    assert status == 404
    listed = orjson.loads((await call(bridge, B, "GET", "/v1/containers"))[1])
    assert container.id not in [entry["id"] for entry in listed["data"]]
    code = base64.b64encode(orjson.dumps({"code": "print(open('secret.txt').read())"})).decode()
    request = {"model": "fake-model", "input": f"call python [args64={code}]",
               "tools": [{"type": "code_interpreter", "container": container.id}]}
    theirs = await call(bridge, B, "POST", "/v1/responses", request)
    never = await call(bridge, B, "POST", "/v1/responses",
                       {**request, "tools": [{"type": "code_interpreter", "container": "cntr_" + "0" * 32}]})
    assert theirs[0] == never[0] == 400
    assert orjson.loads(theirs[1])["error"]["param"] == orjson.loads(never[1])["error"]["param"] == "tools[0].container"
    shell = {"model": "fake-model", "input": "sh: cat secret.txt", "tools": [
        {"type": "shell", "environment": {"type": "container_reference", "container_id": container.id}}]}
    theirs = await call(bridge, B, "POST", "/v1/responses", shell)
    never = await call(bridge, B, "POST", "/v1/responses", orjson.loads(
        orjson.dumps(shell).replace(container.id.encode(), missing[15:].encode())))
    assert theirs[0] == never[0] == 400  # the hosted shell: the same refusal, byte for byte but for the id
    assert theirs[1].replace(container.id.encode(), b"X") == never[1].replace(missing[15:].encode(), b"X")
    async with sdk(bridge, A) as a:  # still there for its owner
        assert (await a.containers.files.content.retrieve(file.id, container_id=container.id)).read() == b"only for a"


async def test_a_tenant_keeps_at_most_its_number_of_containers(bridge: Sidecar) -> None:
    async with sdk(bridge, FEW) as few:
        first = await few.containers.create(name="one")
        with pytest.raises(openai.BadRequestError) as refused:
            await few.containers.create(name="two")
        assert refused.value.body["code"] == "container_limit_exceeded"  # type: ignore[index]
        await few.containers.delete(first.id)
        await few.containers.create(name="two")


def refusals(outcomes: list[tuple[int, bytes]]) -> list[dict[str, object]]:
    """The errors of the refused requests among ``outcomes`` (status, body), each checked to be a 400."""
    refused = [(status, orjson.loads(body)) for status, body in outcomes if status != 200]
    assert all(status == 400 and set(body) == {"error"} for status, body in refused), refused
    return [body["error"] for _, body in refused]


async def live_containers(bridge: Sidecar, tenant: str) -> list[str]:
    status, body = await call(bridge, tenant, "GET", "/v1/containers?limit=100")
    assert status == 200, body
    return [entry["id"] for entry in orjson.loads(body)["data"]]


async def test_creates_at_once_never_pass_the_container_limit(bridge: Sidecar) -> None:
    """Eight creates at once against ``max_containers: 3``: three containers, and five refusals that are the
    refusal of a create over the limit made alone."""
    outcomes = await asyncio.gather(*(call(bridge, THREE, "POST", "/v1/containers", {"name": f"c{n}"})
                                      for n in range(8)))
    errors = refusals(list(outcomes))
    assert len(errors) == 5 and len(await live_containers(bridge, THREE)) == 3
    alone = refusals([await call(bridge, THREE, "POST", "/v1/containers", {"name": "one more"})])
    assert errors == alone * 5
    assert alone[0]["code"] == "container_limit_exceeded" and alone[0]["param"] is None


@pytest.mark.skipif(check_bubblewrap()[1] is not None, reason="bubblewrap cannot sandbox here")
async def test_auto_containers_at_once_never_pass_the_container_limit(bridge: Sidecar) -> None:
    """Six responses at once with the code interpreter's ``auto`` container, against ``max_containers: 3``: each
    response makes its container as it starts, and only three are made; the others fail as one made alone over
    the limit does."""
    request = {"model": "fake-model", "input": "hello", "tools": [{"type": "code_interpreter",
                                                                     "container": {"type": "auto"}}]}
    outcomes = list(await asyncio.gather(*(call(bridge, AUTO_THREE, "POST", "/v1/responses", request)
                                           for _ in range(6))))
    assert sum(status == 200 for status, _ in outcomes) == 3, outcomes
    assert len(await live_containers(bridge, AUTO_THREE)) == 3
    alone = refusals([await call(bridge, AUTO_THREE, "POST", "/v1/responses", request)])
    assert refusals(outcomes) == alone * 3
    assert alone[0]["code"] == "container_limit_exceeded"


async def test_files_and_container_files_share_the_stored_bytes_limit(bridge: Sidecar) -> None:
    """``max_stored_bytes`` bounds a tenant's files and container files together: each is refused when the
    other kind already holds the budget, and uploads of both kinds at once never pass it."""
    async with sdk(bridge, BUDGET) as budget:
        container = await budget.containers.create(name="budget")
        kept = await budget.files.create(file=("a.bin", b"a" * 4000), purpose="user_data")
        with pytest.raises(openai.BadRequestError) as refused:  # 4000 + 2000 > 5500
            await budget.containers.files.create(container.id, file=("b.bin", b"b" * 2000))
        assert refused.value.code == "storage_limit_exceeded" and "4000 bytes in use" in refused.value.message
        await budget.containers.files.create(container.id, file=("b.bin", b"b" * 1500))  # exactly at the limit
        with pytest.raises(openai.BadRequestError) as refused:
            await budget.files.create(file=("c.bin", b"c"), purpose="user_data")
        assert refused.value.code == "storage_limit_exceeded" and "5500 bytes in use" in refused.value.message
        await budget.files.delete(kept.id)
        await budget.containers.delete(container.id)

        # six uploads of each kind at once, 1000 bytes each: what is kept stays within 5500 bytes
        container = await budget.containers.create(name="at once")
        outcomes = await asyncio.gather(
            *(budget.files.create(file=(f"{n}.bin", b"f" * 1000), purpose="user_data") for n in range(6)),
            *(budget.containers.files.create(container.id, file=(f"{n}.bin", b"c" * 1000)) for n in range(6)),
            return_exceptions=True)
        failed = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        assert all(isinstance(error, openai.BadRequestError) and error.code == "storage_limit_exceeded"
                   for error in failed), failed
        files = [f.bytes async for f in budget.files.list()]
        container_files = [f.bytes async for f in budget.containers.files.list(container.id)]
        assert len(files) + len(container_files) == len(outcomes) - len(failed)
        assert sum(files) + sum(container_files) <= 5500
