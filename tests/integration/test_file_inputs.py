"""Content parts naming one of the tenant's files (``input_file`` / ``input_image`` with ``file_id``), through both
doors, JSON and stream, each answer validated strictly (the SDK's types and the spec's): the upstream gets what it
reads (text extracted as retrieval extracts it, images as data URLs, PDFs as file parts where the profile reads
files), the stored input keeps ``file_id`` and ``detail`` as sent, another tenant's file is the same 404 as
``GET /v1/files/{id}``, and what cannot be served is a 400 naming it."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from openai.types.responses import ResponseItem
from pydantic import TypeAdapter

from responses_bridge.envoy_config import Auth
from tests.integration.test_tenant_isolation import create_key
from tests.support.bridge import Sidecar, UpstreamLog, running_sidecar
from tests.support.gateway import envoy_before
from tests.support.schema import check_stream, validate_event, validate_response
from tests.unit.test_retrieval_extract import pdf_with_text

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_replicas_code.py",
    "tests/unit/test_store_contract.py",
    "tests/integration/test_agents_automations_replicas.py",
    "tests/unit/test_postgres_file_bytes.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGBgAAAABQABpfZFQAAAAABJRU5E"
                       "rkJggg==")
NOTE = "The harbour lamps are kept in the north depot."
ITEMS = TypeAdapter(list[ResponseItem])


async def upload(client: openai.AsyncOpenAI, name: str, data: bytes) -> str:
    return (await client.files.create(file=(name, data), purpose="user_data")).id


def user(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "input_text", "text": "Look at this."}, *parts]}]


async def create(http: aiohttp.ClientSession, body: dict[str, Any], *, stream: bool,
                 headers: dict[str, str] | None = None) -> dict[str, Any]:
    """A create through raw HTTP, validated strictly: the Response (JSON) or every event and their order."""
    async with http.post("/v1/responses", json={"model": "fake-model", **body, "stream": stream},
                         headers=headers) as answer:
        raw = await answer.read()
        assert answer.status == 200, raw
    if stream:
        events = check_stream(raw)
        response: dict[str, Any] = events[-1]["response"]
    else:
        response = orjson.loads(raw)
        validate_response(response)
    assert response["status"] == "completed"
    return response


async def listed_input(http: aiohttp.ClientSession, response_id: str,
                       headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    async with http.get(f"/v1/responses/{response_id}/input_items?order=asc", headers=headers) as answer:
        page = await answer.json()
    ITEMS.validate_python(page["data"], strict=True)
    return list(page["data"])


def last_user_parts(body: dict[str, Any]) -> list[dict[str, Any]]:
    content = [message for message in body["messages"] if message["role"] == "user"][-1]["content"]
    assert isinstance(content, list)
    return list(content)


async def refused(http: aiohttp.ClientSession, body: dict[str, Any],
                  headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    async with http.post("/v1/responses", json={"model": "fake-model", **body}, headers=headers) as answer:
        payload = await answer.json()
        return answer.status, payload["error"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_text_file_and_an_image_by_id_reach_the_upstream_as_it_reads_them(
        client: openai.AsyncOpenAI, http: aiohttp.ClientSession, upstream_log: UpstreamLog, stream: bool) -> None:
    text_id = await upload(client, "note.md", NOTE.encode())
    image_id = await upload(client, "dot.png", PNG)
    response = await create(http, {"input": user({"type": "input_file", "file_id": text_id, "detail": "low"},
                                                 {"type": "input_image", "file_id": image_id,
                                                  "detail": "original"})}, stream=stream)
    parts = last_user_parts(await upstream_log.last_body())
    assert parts[1] == {"type": "text", "text": f"[file: note.md]\n{NOTE}"}
    # the generic profile's backends know no "original": the most they render (docs/api.md)
    assert parts[2] == {"type": "image_url", "image_url": {
        "url": "data:image/png;base64," + base64.b64encode(PNG).decode(), "detail": "high"}}
    stored = (await listed_input(http, response["id"]))[0]["content"]
    assert stored[1] == {"type": "input_file", "file_id": text_id, "detail": "low"}
    assert stored[2]["file_id"] == image_id and stored[2]["detail"] == "original"
    assert stored[2].get("image_url") is None


async def test_a_pdf_by_id_is_its_text_where_the_backend_reads_no_files(
        client: openai.AsyncOpenAI, http: aiohttp.ClientSession, upstream_log: UpstreamLog) -> None:
    pdf_id = await upload(client, "report.pdf", pdf_with_text(["Quarterly lamps: forty two"]))
    await create(http, {"input": user({"type": "input_file", "file_id": pdf_id})}, stream=False)
    part = last_user_parts(await upstream_log.last_body())[1]
    assert part["type"] == "text" and part["text"].startswith("[file: report.pdf]\n")
    assert "Quarterly lamps: forty two" in part["text"]


async def test_a_file_sent_by_id_is_resolved_again_when_a_chain_continues(
        client: openai.AsyncOpenAI, http: aiohttp.ClientSession, upstream_log: UpstreamLog) -> None:
    text_id = await upload(client, "note.txt", NOTE.encode())
    first = await create(http, {"input": user({"type": "input_file", "file_id": text_id})}, stream=False)
    await create(http, {"input": "And again?", "previous_response_id": first["id"]}, stream=True)
    messages = (await upstream_log.last_body())["messages"]
    assert messages[0]["content"][1] == {"type": "text", "text": f"[file: note.txt]\n{NOTE}"}


async def test_a_prompt_variable_naming_a_file_is_resolved_too(
        client: openai.AsyncOpenAI, http: aiohttp.ClientSession, upstream_log: UpstreamLog) -> None:
    text_id = await upload(client, "note.txt", NOTE.encode())
    async with http.post("/v1/prompts", json={"instructions": "Summarise {{doc}}."}) as answer:
        prompt = await answer.json()
    await create(http, {"input": "go", "prompt": {"id": prompt["id"], "variables": {
        "doc": {"type": "input_file", "file_id": text_id}}}}, stream=True)
    messages = (await upstream_log.last_body())["messages"]
    assert messages[1]["content"][1] == {"type": "text", "text": f"[file: note.txt]\n{NOTE}"}


async def test_a_compaction_summarises_a_file_by_its_content_and_keeps_the_latest_part_as_sent(
        client: openai.AsyncOpenAI, http: aiohttp.ClientSession, upstream_log: UpstreamLog) -> None:
    text_id = await upload(client, "note.txt", NOTE.encode())
    async with http.post("/v1/responses/compact", json={"model": "fake-model", "input": [
            *user({"type": "input_file", "file_id": text_id}), {"role": "assistant", "content": "Noted."},
            *user({"type": "input_file", "file_id": text_id})]}) as answer:
        assert answer.status == 200, await answer.text()
        compacted = await answer.json()
    assert NOTE in orjson.dumps((await upstream_log.last_body())["messages"]).decode()
    assert compacted["output"][0]["content"][1] == {"type": "input_file", "file_id": text_id}


@pytest.mark.parametrize(("part", "param", "code"), [
    ({"type": "input_file", "file_id": "file-0123456789abcdef0123456789abcdef"}, "input[0].content[1].file_id",
     "not_found"),
    ({"type": "input_image", "file_id": "file-nope"}, "input[0].content[1].file_id", "not_found"),
    ({"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}, "input_audio",
     "unsupported_content_type"),
    ({"type": "input_image", "image_url": "data:image/png;base64,AA==", "detail": "huge"},
     "input[0].content[1].detail", "invalid_value"),
])
async def test_what_cannot_be_served_is_refused_naming_it(http: aiohttp.ClientSession, upstream_log: UpstreamLog,
                                                           part: dict[str, Any], param: str, code: str) -> None:
    status, error = await refused(http, {"input": user(part)})
    assert (status, error["param"], error["code"]) == (404 if code == "not_found" else 400, param, code), error
    assert await upstream_log.entries() == []


async def test_an_image_part_naming_a_file_that_is_no_image_is_a_400(
        client: openai.AsyncOpenAI, http: aiohttp.ClientSession, upstream_log: UpstreamLog) -> None:
    text_id = await upload(client, "note.txt", NOTE.encode())
    binary_id = await upload(client, "blob.bin", b"\x00\x01\x02" * 10)
    status, error = await refused(http, {"input": user({"type": "input_image", "file_id": text_id})})
    assert (status, error["param"], error["code"]) == (400, "input[0].content[1].file_id", "invalid_image")
    status, error = await refused(http, {"input": user({"type": "input_file", "file_id": binary_id})})
    assert (status, error["param"], error["code"]) == (400, "input[0].content[1].file_id", "unsupported_file")
    assert await upstream_log.entries() == []


# --- an OpenAI upstream (openai_fields: it reads files, audio and "original"), with tenants -----------------------


KEYS: dict[str, str] = {}  # tenant -> its API key on the reading sidecar (auth: keys)


def as_tenant(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[tenant]}"}


@pytest.fixture(scope="module")
async def reading(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sidecar]:
    directory = str(tmp_path_factory.mktemp("file-inputs"))
    db = os.path.join(directory, "bridge.db")
    KEYS.update({tenant: create_key(db, tenant) for tenant in ("a", "b")})
    async with running_sidecar(directory, fake_upstream, "--db", db,
                               env={**os.environ, "RESPONSES_BRIDGE_OPENAI_FIELDS": "true",
                                    "RESPONSES_BRIDGE_AUTH": "keys"}) as started:
        yield started


@pytest.fixture(scope="module")
async def reading_envoy(reading: Sidecar) -> AsyncIterator[str]:
    async with envoy_before(reading, auth=Auth(mode="keys")) as envoy:
        yield envoy


@pytest.fixture
def reading_base(door: str, request: pytest.FixtureRequest, reading: Sidecar) -> str:
    return str(request.getfixturevalue("reading_envoy")) if door == "envoy" else reading.http_url


@pytest.fixture
async def reader(reading_base: str) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=reading_base, timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


async def upload_as(http: aiohttp.ClientSession, tenant: str, name: str, data: bytes) -> str:
    form = aiohttp.FormData()
    form.add_field("purpose", "user_data")
    form.add_field("file", data, filename=name)
    async with http.post("/v1/files", data=form, headers=as_tenant(tenant)) as answer:
        assert answer.status == 200, await answer.text()
        return str((await answer.json())["id"])


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_an_upstream_that_reads_files_gets_the_pdf_audio_and_original_detail(
        reader: aiohttp.ClientSession, upstream_log: UpstreamLog, stream: bool) -> None:
    pdf = pdf_with_text(["Lamps"])
    pdf_id = await upload_as(reader, "a", "report.pdf", pdf)
    image_id = await upload_as(reader, "a", "dot.png", PNG)
    audio = {"data": "UklGRg==", "format": "wav"}
    response = await create(reader, {"input": user({"type": "input_file", "file_id": pdf_id},
                                                   {"type": "input_image", "file_id": image_id, "detail": "original"},
                                                   {"type": "input_audio", "input_audio": audio})},
                            stream=stream, headers=as_tenant("a"))
    parts = last_user_parts(await upstream_log.last_body())
    assert parts[1] == {"type": "file", "file": {
        "file_data": "data:application/pdf;base64," + base64.b64encode(pdf).decode(), "filename": "report.pdf"}}
    assert parts[2]["image_url"]["detail"] == "original"
    assert parts[3] == {"type": "input_audio", "input_audio": audio}
    # listed as sent; the SDK's ResponseInputContent has no audio variant, so the strict check takes the rest
    async with reader.get(f"/v1/responses/{response['id']}/input_items",
                          headers=as_tenant("a")) as answer:
        [listed] = (await answer.json())["data"]
    assert listed["content"][3] == {"type": "input_audio", "input_audio": audio}
    ITEMS.validate_python([{**listed, "content": listed["content"][:3]}], strict=True)
    assert listed["content"][1] == {"type": "input_file", "file_id": pdf_id}


async def test_a_file_of_megabytes_reaches_the_upstream_through_both_doors(reader: aiohttp.ClientSession,
                                                                          upstream_log: UpstreamLog) -> None:
    data = b"\x00\x01binary" * (1024 * 1024)  # 8 MiB: past gRPC's default 4 MiB message on the Envoy door
    blob_id = await upload_as(reader, "a", "blob.bin", data)
    await create(reader, {"input": user({"type": "input_file", "file_id": blob_id})}, stream=False,
                 headers=as_tenant("a"))
    part = last_user_parts(await upstream_log.last_body())[1]
    assert part["file"]["file_data"] == "data:application/octet-stream;base64," + base64.b64encode(data).decode()


async def test_another_tenants_file_is_the_404_of_an_unknown_one(reader: aiohttp.ClientSession,
                                                                 upstream_log: UpstreamLog) -> None:
    theirs = await upload_as(reader, "b", "secret.txt", b"the launch code is amber falcon")
    async with reader.get(f"/v1/files/{theirs}", headers=as_tenant("a")) as answer:
        assert answer.status == 404
        files_error = (await answer.json())["error"]
    for kind in ("input_file", "input_image"):
        status, error = await refused(reader, {"input": user({"type": kind, "file_id": theirs})},
                                      headers=as_tenant("a"))
        assert status == 404 and error["message"] == files_error["message"] and error["code"] == files_error["code"]
        assert error["param"] == "input[0].content[1].file_id"
    assert await upstream_log.entries() == []


async def test_a_websocket_turn_resolves_files_by_id(client: openai.AsyncOpenAI, base_url: str,
                                                      upstream_log: UpstreamLog) -> None:
    text_id = await upload(client, "note.txt", NOTE.encode())
    async with aiohttp.ClientSession(base_url=base_url) as session, session.ws_connect("/v1/responses") as ws:
        await ws.send_str(orjson.dumps({"type": "response.create", "model": "fake-model",
                                        "input": user({"type": "input_file", "file_id": text_id})}).decode())
        events: list[dict[str, Any]] = []
        while not events or events[-1]["type"] not in ("response.completed", "response.failed", "error"):
            events.append(orjson.loads((await ws.receive(timeout=20)).data))
    assert events[-1]["type"] == "response.completed", events[-1]
    for event in events:
        validate_event(event)
    assert last_user_parts(await upstream_log.last_body())[1] == {"type": "text", "text": f"[file: note.txt]\n{NOTE}"}
