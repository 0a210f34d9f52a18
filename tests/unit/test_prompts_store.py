"""Prompt templates: the versioned store, the service's rules, and rendering into instructions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from responses_bridge.engine.options import EngineOptions
from responses_bridge.protocol.errors import APIError
from responses_bridge.run.response_run import ResponseRun
from responses_bridge.services.responses.prompts import PromptService, placeholders
from responses_bridge.store import SQLiteResponseStore
from responses_bridge.store.base import DEFAULT_TENANT, PromptStore
from responses_bridge.store.records import PromptVersionConflict
from responses_bridge.store.sqlite.prompts import SQLitePromptStore

IMAGE = {"type": "input_image", "image_url": "https://example.com/cat.png"}


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SQLiteResponseStore]:
    async with SQLiteResponseStore(str(tmp_path / "prompts.db")) as opened:
        yield opened


@pytest.fixture
def store(db: SQLiteResponseStore) -> SQLitePromptStore:
    return SQLitePromptStore(db)


@pytest.fixture
def service(store: SQLitePromptStore) -> PromptService:
    return PromptService(store)


async def test_store_versions_default_and_conflicts(store: SQLitePromptStore) -> None:
    assert isinstance(store, PromptStore)
    await store.create_prompt("pmpt_a", 5, {"instructions": "v1"}, tenant=DEFAULT_TENANT)
    assert (await store.get_prompt("pmpt_a", tenant=DEFAULT_TENANT)).version == 1
    second = await store.add_version("pmpt_a", 6, {"instructions": "v2"}, expected_version=1, tenant=DEFAULT_TENANT)
    assert (second.version, second.latest_version, second.body) == (2, 2, {"instructions": "v2"})
    with pytest.raises(PromptVersionConflict):
        await store.add_version("pmpt_a", 7, {"instructions": "v3"}, expected_version=1, tenant=DEFAULT_TENANT)
    assert (await store.get_prompt("pmpt_a",
                                   tenant=DEFAULT_TENANT)).version == 2  # the latest is the default until one is set
    assert (await store.set_default_version("pmpt_a", 1, tenant=DEFAULT_TENANT)).version == 1
    assert (await store.get_prompt("pmpt_a", tenant=DEFAULT_TENANT)).version == 1
    await store.add_version("pmpt_a", 8, {"instructions": "v3"}, tenant=DEFAULT_TENANT)
    assert (await store.get_prompt("pmpt_a", tenant=DEFAULT_TENANT)).version == 1  # a pinned default stays
    assert (await store.get_prompt("pmpt_a", 3, tenant=DEFAULT_TENANT)).body == {"instructions": "v3"}
    assert await store.get_prompt("pmpt_a", 9, tenant=DEFAULT_TENANT) is None
    assert await store.set_default_version("pmpt_a", 9, tenant=DEFAULT_TENANT) is None
    assert [v.version for v in await store.list_versions("pmpt_a", tenant=DEFAULT_TENANT)] == [1, 2, 3]
    assert await store.add_version("pmpt_missing", 1, {}, tenant=DEFAULT_TENANT) is None
    assert await store.delete_prompt("pmpt_a", tenant=DEFAULT_TENANT) and not await store.delete_prompt("pmpt_a",
                                                                                                        tenant=DEFAULT_TENANT)
    assert await store.list_versions("pmpt_a", tenant=DEFAULT_TENANT) is None


async def test_concurrent_updates_from_one_version_one_wins(store: SQLitePromptStore) -> None:
    await store.create_prompt("pmpt_c", 1, {"instructions": "v1"}, tenant=DEFAULT_TENANT)
    results = await asyncio.gather(*(store.add_version("pmpt_c", 2, {"instructions": f"x{n}"}, 1, tenant=DEFAULT_TENANT)
                                     for n in range(10)), return_exceptions=True)
    assert sum(1 for r in results if not isinstance(r, Exception)) == 1
    assert all(isinstance(r, PromptVersionConflict) for r in results if isinstance(r, Exception))


async def test_list_pages(store: SQLitePromptStore) -> None:
    for n in range(5):
        await store.create_prompt(f"pmpt_{n}", 100 + n, {"instructions": str(n)}, tenant=DEFAULT_TENANT)
    page, more = await store.list_prompts(limit=2, tenant=DEFAULT_TENANT)
    assert [p.id for p in page] == ["pmpt_4", "pmpt_3"] and more
    page, more = await store.list_prompts(limit=2, after="pmpt_3", tenant=DEFAULT_TENANT)
    assert [p.id for p in page] == ["pmpt_2", "pmpt_1"] and more
    page, more = await store.list_prompts(limit=5, after="pmpt_1", order="asc", tenant=DEFAULT_TENANT)
    assert [p.id for p in page] == ["pmpt_2", "pmpt_3", "pmpt_4"] and not more


def test_placeholders() -> None:
    assert placeholders("Hi {{name}}, {{ topic }} and {{name}} {{bad name}} {x}") == ["name", "topic"]


async def test_service_shapes(service: PromptService) -> None:
    created = await service.create({"name": "greeter", "instructions": "Greet {{name}} about {{topic}}.",
                                    "variables": {"topic": "the weather"}, "metadata": {"team": "a"}},
                                        tenant=DEFAULT_TENANT)
    assert created["id"].startswith("pmpt_") and created["object"] == "prompt"
    assert (created["version"], created["default_version"], created["latest_version"]) == ("1", "1", "1")
    assert created["variables"] == {"topic": "the weather", "name": None}
    updated = await service.update(created["id"], {"instructions": "Hello {{name}}.", "version": "1"},
                                   tenant=DEFAULT_TENANT)
    assert updated["version"] == "2" and updated["name"] == "greeter" and updated["metadata"] == {"team": "a"}
    with pytest.raises(APIError) as caught:
        await service.update(created["id"], {"instructions": "x", "version": "1"}, tenant=DEFAULT_TENANT)
    assert caught.value.status == 409 and caught.value.type == "invalid_request_error"
    assert (await service.get(created["id"], "1",
                              tenant=DEFAULT_TENANT))["instructions"] == "Greet {{name}} about {{topic}}."
    assert (await service.set_default_version(created["id"], {"version": "1"},
                                              tenant=DEFAULT_TENANT))["default_version"] == "1"
    versions = await service.versions(created["id"], tenant=DEFAULT_TENANT)
    assert [v["version"] for v in versions["data"]] == ["1", "2"]
    for call, status in [(service.get("pmpt_nope", tenant=DEFAULT_TENANT), 404),
                         (service.get(created["id"], "7", tenant=DEFAULT_TENANT), 404),
                         (service.get(created["id"], "x", tenant=DEFAULT_TENANT), 400),
                         (service.create({"name": "no template"}, tenant=DEFAULT_TENANT), 400),
                         (service.create({"instructions": "x", "variables": {"bad name": None}},
                                         tenant=DEFAULT_TENANT), 400),
                         (service.set_default_version(created["id"], {"version": "9"}, tenant=DEFAULT_TENANT), 404),
                         (service.create({"instructions": "x", "metadata": {str(n): "v" for n in range(17)}},
                                         tenant=DEFAULT_TENANT), 400)]:
        with pytest.raises(APIError) as caught:
            await call
        assert caught.value.status == status
    assert (await service.delete(created["id"], tenant=DEFAULT_TENANT))["deleted"] is True


async def test_render_text_media_and_missing(service: PromptService) -> None:
    created = await service.create({"instructions": "You help {{user}} with {{topic}}. Look at {{photo}}.",
                                    "variables": {"topic": "cooking"}}, tenant=DEFAULT_TENANT)
    rendered = await service.render({"id": created["id"], "variables": {
        "user": "Ada", "photo": IMAGE}}, tenant=DEFAULT_TENANT)
    assert rendered.instructions == "You help Ada with cooking. Look at [photo]."
    (message,) = rendered.input_items
    assert message["role"] == "user" and message["content"] == [
        {"type": "input_text", "text": "[photo]:"}, {**IMAGE, "detail": "auto"}]
    assert rendered.echo == {"id": created["id"], "version": "1",
                             "variables": {"user": "Ada", "photo": {**IMAGE, "detail": "auto"}}}
    text_var = await service.render({"id": created["id"], "variables": {
        "user": {"type": "input_text", "text": "Bob"}, "photo": "a photo"}}, tenant=DEFAULT_TENANT)
    assert text_var.instructions == "You help Bob with cooking. Look at a photo." and not text_var.input_items
    with pytest.raises(APIError) as caught:
        await service.render({"id": created["id"], "variables": {"user": "Ada"}}, tenant=DEFAULT_TENANT)
    assert caught.value.status == 400 and caught.value.param == "prompt.variables.photo"
    assert "photo" in caught.value.message
    with pytest.raises(APIError) as caught:
        await service.render({"id": "pmpt_nope"}, tenant=DEFAULT_TENANT)
    assert caught.value.status == 404
    with pytest.raises(APIError) as caught:
        await service.render({"id": created["id"], "version": "5", "variables": {"user": "x", "photo": "y"}},
                             tenant=DEFAULT_TENANT)
    assert caught.value.status == 404 and caught.value.param == "prompt.version"
    with pytest.raises(APIError) as caught:
        await service.render({"id": created["id"], "variables": {"user": 5, "photo": "y"}}, tenant=DEFAULT_TENANT)
    assert caught.value.status == 400 and caught.value.param == "prompt.variables.user"


async def test_exchange_combines_prompt_and_request_instructions(db: SQLiteResponseStore,
                                                                 service: PromptService) -> None:
    created = await service.create({"instructions": "Speak like {{who}}."}, tenant=DEFAULT_TENANT)
    exchange = ResponseRun(db, EngineOptions(), prompts=service, tenant=DEFAULT_TENANT)
    call = await exchange.begin(orjson.dumps({"model": "m", "input": "hi", "instructions": "Be brief.",
                                              "prompt": {"id": created["id"], "variables": {"who": "a pirate"}}}))
    messages = orjson.loads(call.body)["messages"]
    assert messages[0] == {"role": "system", "content": "Speak like a pirate.\n\nBe brief."}
    assert exchange.response["instructions"] == "Speak like a pirate.\n\nBe brief."
    assert exchange.response["prompt"] == {"id": created["id"], "version": "1", "variables": {"who": "a pirate"}}
    without = ResponseRun(db, EngineOptions(), tenant=DEFAULT_TENANT)
    with pytest.raises(APIError) as caught:
        await without.begin(orjson.dumps({"model": "m", "input": "hi", "prompt": {"id": created["id"]}}))
    assert caught.value.param == "prompt"
