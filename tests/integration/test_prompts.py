"""Prompt templates (``/v1/prompts``, raw HTTP: the SDK has no prompts API) and ``prompt`` on responses, through
both doors."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import pytest

from tests.support.schema import check_stream, validate_response

pytestmark = pytest.mark.store_proven(
    "tests/unit/test_store_contract.py",
    "tests/integration/test_replicas.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

IMAGE_URL = "https://example.com/cat.png"


async def call(http: aiohttp.ClientSession, method: str, path: str, body: Any = None,
               expect: int = 200) -> dict[str, Any]:
    async with http.request(method, path, json=body) as raw:
        payload = await raw.json()
        assert raw.status == expect, payload
        if expect >= 400:
            assert set(payload["error"]) == {"message", "type", "param", "code"}
        return payload


async def test_prompt_crud_and_versions(http: aiohttp.ClientSession) -> None:
    created = await call(http, "POST", "/v1/prompts", {
        "name": "support", "instructions": "You support {{product}} customers. Tone: {{tone}}.",
        "variables": {"tone": "friendly"}, "metadata": {"team": "care"}})
    prompt_id = created["id"]
    assert prompt_id.startswith("pmpt_") and created["object"] == "prompt"
    assert (created["version"], created["default_version"], created["latest_version"]) == ("1", "1", "1")
    assert created["variables"] == {"tone": "friendly", "product": None}
    assert created["metadata"] == {"team": "care"} and created["name"] == "support"

    v2 = await call(http, "POST", f"/v1/prompts/{prompt_id}", {"instructions": "v2 for {{product}}",
                                                               "version": "1"})
    assert v2["version"] == "2" and v2["latest_version"] == "2" and v2["name"] == "support"
    conflict = await call(http, "POST", f"/v1/prompts/{prompt_id}", {"instructions": "stale", "version": "1"},
                          expect=409)
    assert conflict["error"]["param"] == "version"
    v3 = await call(http, "POST", f"/v1/prompts/{prompt_id}", {"metadata": {"team": "x"}})  # no version: no check
    assert v3["version"] == "3" and v3["instructions"] == "v2 for {{product}}"

    assert (await call(http, "GET", f"/v1/prompts/{prompt_id}"))["version"] == "3"
    assert (await call(http, "GET", f"/v1/prompts/{prompt_id}?version=1"))["instructions"].startswith("You support")
    await call(http, "GET", f"/v1/prompts/{prompt_id}?version=9", expect=404)
    await call(http, "GET", f"/v1/prompts/{prompt_id}?version=abc", expect=400)
    versions = await call(http, "GET", f"/v1/prompts/{prompt_id}/versions")
    assert versions["object"] == "list" and [v["version"] for v in versions["data"]] == ["1", "2", "3"]

    pinned = await call(http, "POST", f"/v1/prompts/{prompt_id}/default_version", {"version": "1"})
    assert pinned["version"] == "1" and pinned["default_version"] == "1" and pinned["latest_version"] == "3"
    assert (await call(http, "GET", f"/v1/prompts/{prompt_id}"))["version"] == "1"
    await call(http, "POST", f"/v1/prompts/{prompt_id}/default_version", {"version": "7"}, expect=404)

    deleted = await call(http, "DELETE", f"/v1/prompts/{prompt_id}")
    assert deleted == {"id": prompt_id, "object": "prompt.deleted", "deleted": True}
    await call(http, "GET", f"/v1/prompts/{prompt_id}", expect=404)
    await call(http, "POST", f"/v1/prompts/{prompt_id}", {"instructions": "x"}, expect=404)
    await call(http, "DELETE", f"/v1/prompts/{prompt_id}", expect=404)


async def test_prompt_update_with_put(http: aiohttp.ClientSession) -> None:
    """PUT is the same update as POST: a new version, the ``version`` check, a 404 for an unknown prompt."""
    created = await call(http, "POST", "/v1/prompts", {"name": "put", "instructions": "v1 {{who}}"})
    prompt_id = created["id"]
    v2 = await call(http, "PUT", f"/v1/prompts/{prompt_id}", {"instructions": "v2 {{who}}", "version": "1"})
    assert (v2["version"], v2["latest_version"], v2["name"]) == ("2", "2", "put")
    assert v2["instructions"] == "v2 {{who}}" and v2["variables"] == {"who": None}
    stale = await call(http, "PUT", f"/v1/prompts/{prompt_id}", {"instructions": "x", "version": "1"}, expect=409)
    assert stale["error"]["param"] == "version"
    await call(http, "PUT", f"/v1/prompts/{prompt_id}", {"instructions": 7}, expect=400)
    v3 = await call(http, "POST", f"/v1/prompts/{prompt_id}", {"metadata": {"k": "v"}})  # POST still updates
    assert v3["version"] == "3" and v3["instructions"] == "v2 {{who}}"
    assert (await call(http, "GET", f"/v1/prompts/{prompt_id}"))["version"] == "3"
    await call(http, "PUT", "/v1/prompts/pmpt_missing", {"instructions": "x"}, expect=404)
    await call(http, "DELETE", f"/v1/prompts/{prompt_id}")


async def test_prompt_list_pagination(http: aiohttp.ClientSession) -> None:
    ids = [(await call(http, "POST", "/v1/prompts", {"instructions": f"p{n}"}))["id"] for n in range(3)]
    seen: list[str] = []
    after = None
    while True:
        page = await call(http, "GET", "/v1/prompts?limit=1&order=asc" + (f"&after={after}" if after else ""))
        seen += [p["id"] for p in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen[-3:] == ids
    await call(http, "GET", "/v1/prompts?limit=0", expect=400)
    await call(http, "GET", "/v1/prompts?after=pmpt_nope", expect=400)


async def test_prompt_validation(http: aiohttp.ClientSession) -> None:
    await call(http, "POST", "/v1/prompts", {"name": "no instructions"}, expect=400)
    await call(http, "POST", "/v1/prompts", {"instructions": 5}, expect=400)
    await call(http, "POST", "/v1/prompts", {"instructions": "x", "variables": {"bad name": "x"}}, expect=400)
    await call(http, "POST", "/v1/prompts", {"instructions": "x", "metadata": {"k": "v" * 513}}, expect=400)
    await call(http, "POST", "/v1/prompts", [1], expect=400)


async def test_response_with_prompt(client: openai.AsyncOpenAI, http: aiohttp.ClientSession, upstream_log) -> None:
    prompt = await call(http, "POST", "/v1/prompts", {
        "instructions": "You answer questions about {{city}} for {{audience}}.",
        "variables": {"audience": "tourists"}})
    response = await client.responses.create(
        model="fake-model", input="what to see?", instructions="Keep it short.",
        prompt={"id": prompt["id"], "variables": {"city": "Lisbon"}})
    expected = "You answer questions about Lisbon for tourists.\n\nKeep it short."
    assert response.instructions == expected
    assert response.prompt.id == prompt["id"] and response.prompt.version == "1"
    assert response.prompt.variables == {"city": "Lisbon"}
    sent = await upstream_log.last_body()
    assert sent["messages"] == [{"role": "system", "content": expected}, {"role": "user", "content": "what to see?"}]

    # stored and replayed as sent; validated against the spec and SDK types
    async with http.get(f"/v1/responses/{response.id}") as raw:
        stored = await raw.json()
    validate_response(stored)
    assert stored["prompt"] == {"id": prompt["id"], "version": "1", "variables": {"city": "Lisbon"}}

    # a new version is used by default; an explicit version pins the old one; streaming works the same
    await call(http, "POST", f"/v1/prompts/{prompt['id']}", {"instructions": "V2 about {{city}}."})
    async with http.post("/v1/responses", json={"model": "fake-model", "input": "hi", "stream": True,
                                                "prompt": {"id": prompt["id"], "variables": {"city": "Porto"}}}) as raw:
        events = check_stream(await raw.read())
    final = events[-1]["response"]
    assert final["instructions"] == "V2 about Porto." and final["prompt"]["version"] == "2"
    pinned = await client.responses.create(model="fake-model", input="hi",
                                           prompt={"id": prompt["id"], "version": "1",
                                                   "variables": {"city": "Faro", "audience": "kids"}})
    assert pinned.instructions == "You answer questions about Faro for kids."


async def test_prompt_with_media_variable(client: openai.AsyncOpenAI, http: aiohttp.ClientSession,
                                          upstream_log) -> None:
    prompt = await call(http, "POST", "/v1/prompts", {"instructions": "Describe {{picture}} for {{name}}."})
    response = await client.responses.create(
        model="fake-model", input="go",
        prompt={"id": prompt["id"], "variables": {"picture": {"type": "input_image", "image_url": IMAGE_URL},
                                                  "name": {"type": "input_text", "text": "Ada"}}})
    assert response.instructions == "Describe [picture] for Ada."
    sent = await upstream_log.last_body()
    assert sent["messages"][0] == {"role": "system", "content": "Describe [picture] for Ada."}
    assert sent["messages"][1] == {"role": "user", "content": [
        {"type": "text", "text": "[picture]:"}, {"type": "image_url", "image_url": {"url": IMAGE_URL,
                                                                                   "detail": "auto"}}]}
    assert sent["messages"][2] == {"role": "user", "content": "go"}
    items = await client.responses.input_items.list(response.id)
    assert len(items.data) == 1  # the prompt's message is not an input item of the response


async def test_prompt_errors(client: openai.AsyncOpenAI, http: aiohttp.ClientSession) -> None:
    prompt = await call(http, "POST", "/v1/prompts", {"instructions": "Hello {{who}} from {{where}}."})
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(model="fake-model", input="x",
                                      prompt={"id": prompt["id"], "variables": {"who": "me"}})
    assert caught.value.body["param"] == "prompt.variables.where" and "where" in caught.value.body["message"]
    with pytest.raises(openai.NotFoundError) as caught:
        await client.responses.create(model="fake-model", input="x", prompt={"id": "pmpt_missing"})
    assert caught.value.body["param"] == "prompt.id"
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model="fake-model", input="x",
                                      prompt={"id": prompt["id"], "version": "4",
                                              "variables": {"who": "a", "where": "b"}})
    async with http.post("/v1/responses", json={"model": "fake-model", "input": "x", "stream": True,
                                                "prompt": {"version": "1"}}) as raw:
        assert raw.status == 400 and (await raw.json())["error"]["param"] == "prompt.id"
