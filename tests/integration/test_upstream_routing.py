"""Two models on two upstreams, routed by the request's ``model``, through both doors; and a native route.

Two fake upstreams (``a`` and ``b``), one sidecar configured with both (``RESPONSES_BRIDGE_UPSTREAMS`` /
``_MODELS``; its own upstream calls through Envoy's listener, ``--upstream-via``), and one real Envoy rendered
from the same upstreams. Each fake records what it received; Envoy's admin counters
(``cluster.upstream_<name>.upstream_rq_total``) show which cluster every request took.

The native route (model ``native*`` -> upstream ``n``, the fake's ``--native`` mode): the backend answers
``/v1/responses`` itself and stores nothing; the bridge adds storage, chains, conversations and background runs,
under response ids of its own.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest

from responses_bridge.demo.fake_embeddings import embed
from tests.support.envoy import have_envoy
from tests.support.sdk import async_sdk
from tests.support.sdk_strict import failure_reason
from tests.support.upstreams import Deployment, running_deployment

pytestmark = pytest.mark.skipif(not have_envoy(), reason="envoy binary not available")
pytestmark = [pytestmark, pytest.mark.store_proven(
    "tests/integration/test_postgres_start.py",
    "tests/integration/test_replicas_retrieval.py",
    "tests/integration/test_replicas.py",
    "tests/unit/test_store_contract.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)]


@pytest.fixture(scope="module")
async def deployment(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    async with running_deployment(str(tmp_path_factory.mktemp("upstreams"))) as started:
        yield started


@pytest.fixture(params=["http", "envoy"])
def door(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def setup(deployment: Deployment, door: str) -> AsyncIterator[tuple[Deployment, openai.AsyncOpenAI]]:
    await deployment.clear()
    base = deployment.envoy_url if door == "envoy" else deployment.http_url
    async with async_sdk(base_url=f"{base}/v1", api_key="sk-client", max_retries=0, timeout=60) as sdk:
        yield deployment, sdk


async def test_each_model_reaches_its_own_upstream(setup: tuple[Deployment, openai.AsyncOpenAI]) -> None:
    deployment, client = setup
    first = await client.responses.create(model="alpha-1", input="to a")
    second = await client.responses.create(model="beta", input="to b")
    assert (first.output_text, second.output_text) == ("Echo: to a", "Echo: to b")
    assert second.model == "beta"  # the client's name, though b was sent its own (upstream_model)
    assert await deployment.models_sent() == {"a": ["alpha-1"], "b": ["fake-model"]}


async def test_streams_are_routed_too(setup: tuple[Deployment, openai.AsyncOpenAI]) -> None:
    deployment, client = setup
    text = ""
    async with client.responses.stream(model="beta", input="streamed to b") as stream:
        async for event in stream:
            if event.type == "response.output_text.delta":
                text += event.delta
        final = await stream.get_final_response()
    assert text == final.output_text == "Echo: streamed to b"
    assert await deployment.models_sent() == {"a": [], "b": ["fake-model"]}


async def test_a_chain_follows_the_model_to_its_upstream(setup: tuple[Deployment, openai.AsyncOpenAI]) -> None:
    deployment, client = setup
    first = await client.responses.create(model="beta", input="remember me")
    await client.responses.create(model="beta", input="and now", previous_response_id=first.id)
    entries = await deployment.logs["b"].entries()
    assert [m["content"] for m in entries[-1]["body"]["messages"]] == ["remember me", "Echo: remember me", "and now"]
    assert await deployment.logs["a"].entries() == []


async def test_an_unknown_model_is_a_404_model_not_found(setup: tuple[Deployment, openai.AsyncOpenAI]) -> None:
    deployment, client = setup
    with pytest.raises(openai.NotFoundError) as caught:
        await client.responses.create(model="gamma", input="nowhere")
    assert caught.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="gamma", messages=[{"role": "user", "content": "x"}])
    assert await deployment.models_sent() == {"a": [], "b": []}


async def test_chat_completions_pass_through_to_the_routed_upstream(
        setup: tuple[Deployment, openai.AsyncOpenAI]) -> None:
    deployment, client = setup
    answer = await client.chat.completions.create(model="beta", messages=[{"role": "user", "content": "plain"}],
                                                  temperature=0.5)
    assert answer.choices[0].message.content == "Echo: plain"
    chunks = [chunk async for chunk in await client.chat.completions.create(
        model="alpha-2", messages=[{"role": "user", "content": "two words"}], stream=True)]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: two words"
    b_body = (await deployment.logs["b"].entries())[-1]["body"]
    assert b_body == {"model": "fake-model", "messages": [{"role": "user", "content": "plain"}], "temperature": 0.5}
    a_body = (await deployment.logs["a"].entries())[-1]["body"]
    assert (a_body["model"], a_body["stream"]) == ("alpha-2", True)


async def test_chat_completions_errors_pass_through_as_the_upstream_sent_them(
        setup: tuple[Deployment, openai.AsyncOpenAI]) -> None:
    deployment, client = setup
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="alpha-1", messages=[{"role": "user", "content": "[error=429]"}])
    assert caught.value.message.endswith("fake upstream error 429")
    # the upstream cut its stream: so does the client's — or, through Envoy, when the cut comes while the processor
    # still holds the answer's headers (it sees every chat answer's), Envoy's 502 in OpenAI's shape comes instead
    with pytest.raises(openai.APIError):
        stream = await client.chat.completions.create(
            model="alpha-1", stream=True, messages=[{"role": "user", "content": "one two three [cut=2]"}])
        async for _ in stream:
            pass
    assert len(await deployment.logs["a"].entries()) == 2

async def test_models_lists_the_routes_merged_with_the_upstreams(
        setup: tuple[Deployment, openai.AsyncOpenAI]) -> None:
    _, client = setup
    listed = [model.id async for model in client.models.list()]
    # the configured exact name, then what an upstream reports that a route sends to it ("fake-*" -> a), then
    # the sidecar's own embedder
    assert listed == ["beta", "fake-model", "fake-reasoner", "fake-embedding", "tokenlearn-static-model"]
    assert (await client.models.retrieve("beta")).id == "beta"
    assert (await client.models.retrieve("alpha-9")).id == "alpha-9"  # a glob's name: served, so it exists
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("gamma")


async def test_embeddings_go_to_the_models_upstream(setup: tuple[Deployment, openai.AsyncOpenAI]) -> None:
    """An upstream's embedding model ("fake-*" -> a) is embedded there, with the sidecar's own call through Envoy's
    internal listener; a model no route serves is the router's 404; the local embedder stays the sidecar's."""
    deployment, client = setup
    before = await deployment.cluster_requests()
    answer = await client.embeddings.create(model="fake-embedding", input="routed", encoding_format="float")
    assert answer.model == "fake-embedding" and answer.data[0].embedding == embed("routed")
    after = await deployment.cluster_requests()
    assert (after["a"] - before["a"], after["b"] - before["b"]) == (1, 0)
    with pytest.raises(openai.NotFoundError) as caught:
        await client.embeddings.create(model="gamma-embed", input="nowhere")
    assert caught.value.code == "model_not_found"
    local = await client.embeddings.create(model="tokenlearn-static-model", input="here", encoding_format="float")
    assert len(local.data[0].embedding) == 64
    assert (await client.models.retrieve("tokenlearn-static-model")).owned_by == "responses-bridge"


async def test_a_background_response_runs_on_its_models_upstream(
        setup: tuple[Deployment, openai.AsyncOpenAI]) -> None:
    deployment, client = setup
    queued = await client.responses.create(model="beta", input="later", background=True)
    for _ in range(200):
        done = await client.responses.retrieve(queued.id)
        if done.status not in ("queued", "in_progress"):
            break
        await asyncio.sleep(0.05)
    assert (done.status, done.output_text) == ("completed", "Echo: later")
    assert await deployment.models_sent() == {"a": [], "b": ["fake-model"]}


async def test_envoy_sends_each_model_to_its_cluster(deployment: Deployment) -> None:
    """Through one Envoy: Responses (JSON and streamed) and Chat Completions, each counted on its own cluster,
    and none of them on the sidecar's HTTP door."""
    before = await deployment.cluster_requests()
    async with async_sdk(base_url=f"{deployment.envoy_url}/v1", api_key="sk", max_retries=0) as client:
        await client.responses.create(model="alpha-x", input="one")
        await client.responses.create(model="alpha-y", input="two", stream=True)
        await client.responses.create(model="beta", input="three")
        await client.chat.completions.create(model="beta", messages=[{"role": "user", "content": "four"}])
        await client.chat.completions.create(model="fake-reasoner", messages=[{"role": "user", "content": "5"}])
    after = await deployment.cluster_requests()
    assert {key: after[key] - before[key] for key in after} == {"a": 3, "b": 2, "n": 0, "sidecar": 0}


async def test_the_route_header_is_what_the_sidecars_own_calls_use(deployment: Deployment) -> None:
    """On Envoy's internal listener (``--upstream-via``), a call naming its upstream in the header goes to that
    cluster as it is; one naming none is a 404, not some upstream."""
    before = await deployment.cluster_requests()
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{deployment.internal_url}/v1/chat/completions",
                                headers={"x-responses-bridge-upstream": "b"},
                                json={"model": "whatever", "messages": [{"role": "user", "content": "direct"}]}
                                ) as response:
            assert response.status == 200
            assert (await response.json())["choices"][0]["message"]["content"] == "Echo: direct"
        async with session.post(f"{deployment.internal_url}/v1/chat/completions", json={"model": "beta"}) as response:
            assert response.status == 404
            assert (await response.json())["error"]["code"] == "upstream_not_found"
    after = await deployment.cluster_requests()
    assert (after["a"] - before["a"], after["b"] - before["b"]) == (0, 1)


async def test_a_client_sending_the_route_header_reaches_no_upstream_unprocessed(deployment: Deployment) -> None:
    """The client-facing listener has no route on the header and strips it: a Responses request naming ``b`` in it
    is still translated and routed by its model, a Chat Completions one by its model (an unknown one is a 404),
    and any other path goes to the sidecar, never to an upstream cluster."""
    await deployment.clear()
    before = await deployment.cluster_requests()
    header = {"x-responses-bridge-upstream": "b", "Authorization": "Bearer sk-client"}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{deployment.envoy_url}/v1/responses", headers=header,
                                json={"model": "alpha-1", "input": "hi"}) as response:
            assert response.status == 200 and (await response.json())["object"] == "response"
        async with session.post(f"{deployment.envoy_url}/v1/chat/completions", headers=header,
                                json={"model": "whatever", "messages": [{"role": "user", "content": "x"}]}
                                ) as response:
            assert response.status == 404 and (await response.json())["error"]["code"] == "model_not_found"
        async with session.get(f"{deployment.envoy_url}/v1/anything", headers=header) as response:
            assert response.status == 404
    after = await deployment.cluster_requests()
    assert {key: after[key] - before[key] for key in ("a", "b", "n")} == {"a": 1, "b": 0, "n": 0}
    [entry] = await deployment.logs["a"].entries()
    assert entry["path"] == "/v1/chat/completions" and entry["body"]["messages"] == [{"role": "user",
                                                                                       "content": "hi"}]


async def test_the_tool_loops_own_turns_go_through_envoy_to_the_models_cluster(deployment: Deployment) -> None:
    """A request with a server-side tool goes through Envoy to the sidecar, which runs the loop; each of its model
    turns goes back through Envoy (the internal listener) to the model's own cluster."""
    await deployment.clear()
    before = await deployment.cluster_requests()
    tool = {"type": "mcp", "server_label": "tools", "server_url": deployment.mcp_url, "require_approval": "never"}
    async with async_sdk(base_url=f"{deployment.envoy_url}/v1", api_key="sk-client", max_retries=0,
                                  timeout=60) as client:
        response = await client.responses.create(model="beta", input="call tools__add", tools=[tool])  # type: ignore[list-item]
    assert [item.type for item in response.output] == ["mcp_list_tools", "mcp_call", "message"]
    after = await deployment.cluster_requests()
    assert {key: after[key] - before[key] for key in after} == {"a": 0, "b": 2, "n": 0, "sidecar": 1}
    assert await deployment.models_sent() == {"a": [], "b": ["fake-model", "fake-model"]}


async def test_a_truncation_retry_goes_to_the_same_upstream(setup: tuple[Deployment, openai.AsyncOpenAI]) -> None:
    """``truncation: "auto"`` after b's context-length error: the shorter retry (made by the processor itself
    through Envoy) goes to b again, not to the first upstream."""
    deployment, client = setup
    long = [{"role": "user" if turn % 2 == 0 else "assistant", "content": f"turn {turn} " + "filler " * 30}
            for turn in range(12)]
    response = await client.responses.create(model="beta", truncation="auto", input=[  # type: ignore[arg-type]
        *long, {"role": "user", "content": "newest [context=200]"}])
    assert response.output_text == "Echo: newest"
    sent = await deployment.models_sent()
    assert sent == {"a": [], "b": ["fake-model", "fake-model"]}

async def test_websocket_turns_go_to_their_models_upstream(deployment: Deployment, door: str) -> None:
    await deployment.clear()
    base = deployment.envoy_url if door == "envoy" else deployment.http_url
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{base}/v1/responses") as ws:
        for model in ("beta", "alpha-ws", "native-ws", "gamma"):
            await ws.send_json({"type": "response.create", "model": model, "input": f"over the socket to {model}"})
            while True:
                event = json.loads((await ws.receive()).data)
                if event["type"] in ("response.completed", "response.failed", "error"):
                    break
            if model == "gamma":
                assert (event["type"], event["status"], event["error"]["code"]) == ("error", 404, "model_not_found")
            else:
                assert event["response"]["output"][0]["content"][0]["text"] == f"Echo: over the socket to {model}"
    assert await deployment.models_sent() == {"a": ["alpha-ws"], "b": ["fake-model"]}
    # a native backend also serves Chat Completions: WebSocket turns are translated for it
    assert [entry["path"] for entry in await deployment.logs["n"].entries()] == ["/v1/chat/completions"]


async def test_compaction_and_token_counts_go_to_the_models_upstream(
        setup: tuple[Deployment, openai.AsyncOpenAI]) -> None:
    deployment, client = setup
    conversation = [{"role": "user", "content": "my name is Zed"}, {"role": "assistant", "content": "Hi Zed"},
                    {"role": "user", "content": "what is my name?"}]
    compacted = await client.responses.compact(model="beta", input=conversation)  # type: ignore[arg-type]
    assert [item.type for item in compacted.output] == ["message", "compaction"]
    assert await deployment.models_sent() == {"a": [], "b": ["fake-model"]}
    counted = await client.responses.input_tokens.count(model="alpha-1", input="count these words")
    assert counted.input_tokens > 0
    with pytest.raises(openai.NotFoundError):
        await client.responses.input_tokens.count(model="gamma", input="nowhere")

async def test_each_upstream_gets_its_own_key_or_the_clients(setup: tuple[Deployment, openai.AsyncOpenAI]) -> None:
    deployment, client = setup
    await client.responses.create(model="alpha-1", input="key?")
    await client.responses.create(model="beta", input="key?")
    await client.chat.completions.create(model="beta", messages=[{"role": "user", "content": "key?"}])
    await client.responses.create(model="native-1", input="key?")
    keys = {name: [entry["headers"]["authorization"] for entry in await log.entries()]
            for name, log in deployment.logs.items()}
    assert keys == {"a": ["Bearer sk-client"], "b": ["Bearer sk-upstream-b"] * 2, "n": ["Bearer sk-client"]}

# --- the native route ----------------------------------------------------------------------------------------


@pytest.fixture
async def native(deployment: Deployment, door: str) -> AsyncIterator[tuple[Deployment, openai.AsyncOpenAI]]:
    await deployment.clear()
    base = deployment.envoy_url if door == "envoy" else deployment.http_url
    async with async_sdk(base_url=f"{base}/v1", api_key="sk-client", max_retries=0, timeout=60) as sdk:
        yield deployment, sdk


async def _sent(dep: Deployment) -> list[dict]:
    entries = await dep.logs["n"].entries()
    assert all(entry["path"] == "/v1/responses" for entry in entries)
    return [entry["body"] for entry in entries]


async def test_a_response_is_stored_under_the_bridges_own_id(native: tuple[Deployment, openai.AsyncOpenAI]) -> None:
    dep, client = native
    response = await client.responses.create(model="native-1", input="hello native")
    assert response.output_text == "Echo: hello native"
    assert response.id.startswith("resp_") and "fake" not in response.id
    assert (response.model, response.store) == ("native-1", True)
    stored = await client.responses.retrieve(response.id)
    assert (stored.id, stored.output_text, stored.status) == (response.id, "Echo: hello native", "completed")
    items = await client.responses.input_items.list(response.id)
    assert [item.content[0].text for item in items.data] == ["hello native"]  # type: ignore[union-attr]
    [sent] = await _sent(dep)
    assert sent["store"] is False and "previous_response_id" not in sent
    await client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(response.id)


async def test_a_chain_across_a_backend_that_stores_nothing(native: tuple[Deployment, openai.AsyncOpenAI]) -> None:
    dep, client = native
    first = await client.responses.create(model="native-1", input="remember the cat")
    second = await client.responses.create(model="native-1", input="what was it?", previous_response_id=first.id)
    third = await client.responses.create(model="native-1", input="and again", previous_response_id=second.id)
    assert (third.output_text, third.previous_response_id) == ("Echo: and again", second.id)
    sent = await _sent(dep)
    texts = [[item["content"] if isinstance(item["content"], str) else item["content"][0]["text"]
              for item in body["input"]] for body in sent]
    assert texts[2] == ["remember the cat", "Echo: remember the cat", "what was it?", "Echo: what was it?",
                        "and again"]
    assert all(body["store"] is False and "previous_response_id" not in body for body in sent)


async def test_a_streamed_chain_carries_the_bridges_ids_in_every_event(
        native: tuple[Deployment, openai.AsyncOpenAI]) -> None:
    dep, client = native
    events = [event async for event in await client.responses.create(
        model="native-2", input="stream one two", stream=True)]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert (events[0].type, events[-1].type) == ("response.created", "response.completed")
    ids = {event.response.id for event in events if hasattr(event, "response")}  # type: ignore[union-attr]
    assert len(ids) == 1 and "fake" not in next(iter(ids))
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert deltas == "Echo: stream one two"
    first_id = events[-1].response.id  # type: ignore[union-attr]
    follow = await client.responses.create(model="native-2", input="next", previous_response_id=first_id,
                                           stream=True)
    final = [event async for event in follow][-1]
    assert final.response.output_text == "Echo: next"  # type: ignore[union-attr]
    assert len((await _sent(dep))[-1]["input"]) == 3


async def test_a_conversation_across_a_backend_that_stores_nothing(
        native: tuple[Deployment, openai.AsyncOpenAI]) -> None:
    dep, client = native
    conversation = await client.conversations.create()
    await client.responses.create(model="native-1", input="first turn", conversation=conversation.id)
    second = await client.responses.create(model="native-1", input="second turn", conversation=conversation.id)
    assert second.output_text == "Echo: second turn"
    sent = await _sent(dep)
    assert len(sent[1]["input"]) == 3 and "conversation" not in sent[1]
    items = await client.conversations.items.list(conversation.id, order="asc")
    assert len(items.data) == 4


async def test_a_background_response_on_a_native_route(native: tuple[Deployment, openai.AsyncOpenAI]) -> None:
    dep, client = native
    queued = await client.responses.create(model="native-1", input="in the background", background=True)
    assert queued.status == "queued"
    for _ in range(200):
        done = await client.responses.retrieve(queued.id)
        if done.status not in ("queued", "in_progress"):
            break
        await asyncio.sleep(0.05)
    assert (done.status, done.output_text) == ("completed", "Echo: in the background")
    [sent] = await _sent(dep)
    assert sent["store"] is False and "background" not in sent and sent["stream"] is True


async def test_backend_errors_reach_the_client_as_they_are(native: tuple[Deployment, openai.AsyncOpenAI]) -> None:
    _, client = native
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(model="native-1", input="[error=400] refused by the backend")
    assert caught.value.status_code == 400
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model="native-1", input="x", previous_response_id="resp_missing")


async def test_envoy_sends_native_requests_to_the_native_cluster(deployment: Deployment) -> None:
    before = await deployment.cluster_requests()
    async with async_sdk(base_url=f"{deployment.envoy_url}/v1", api_key="sk", max_retries=0) as client:
        first = await client.responses.create(model="native-x", input="one")
        await client.responses.create(model="native-x", input="two", previous_response_id=first.id, stream=True)
    after = await deployment.cluster_requests()
    assert {key: after[key] - before[key] for key in after} == {"a": 0, "b": 0, "n": 2, "sidecar": 0}


async def test_server_side_tools_on_a_native_route_run_in_the_bridge(
        native: tuple[Deployment, openai.AsyncOpenAI]) -> None:
    """The backend runs no MCP tool: the bridge runs the loop over the same backend's Chat Completions."""
    deployment, client = native
    tool = {"type": "mcp", "server_label": "tools", "server_url": deployment.mcp_url, "require_approval": "never"}
    response = await client.responses.create(model="native-1", input="call tools__add", tools=[tool])  # type: ignore[list-item]
    assert [item.type for item in response.output] == ["mcp_list_tools", "mcp_call", "message"]
    assert response.output_text.startswith("Tool result: ")
    paths = [entry["path"] for entry in await deployment.logs["n"].entries()]
    assert paths == ["/v1/chat/completions", "/v1/chat/completions"]
    follow = await client.responses.create(model="native-1", input="thanks", previous_response_id=response.id)
    assert follow.output_text == "Echo: thanks"  # and the chain goes on natively
    assert (await deployment.logs["n"].entries())[-1]["path"] == "/v1/responses"


async def test_compaction_items_reach_a_native_backend_as_their_summary(
        native: tuple[Deployment, openai.AsyncOpenAI]) -> None:
    deployment, client = native
    conversation = [{"role": "user", "content": "my name is Zed"}, {"role": "assistant", "content": "Hi Zed"},
                    {"role": "user", "content": "what is my name?"}]
    compacted = await client.responses.compact(model="native-1", input=conversation)  # type: ignore[arg-type]
    items = [item.model_dump(exclude_none=True, warnings=False) for item in compacted.output]
    await deployment.clear()
    response = await client.responses.create(model="native-1", input=[*items, {"role": "user", "content": "go"}])
    assert response.output_text == "Echo: go"
    sent = (await _sent(deployment))[-1]["input"]
    assert all(item.get("type") != "compaction" for item in sent)
    assert any("Zed" in part.get("text", "") for item in sent if isinstance(item.get("content"), list)
               for part in item["content"])
    listed = await client.responses.input_items.list(response.id, order="asc")
    assert [item.type for item in listed.data] == ["message", "compaction", "message"]  # stored as sent


async def test_a_native_stream_the_backend_cuts_ends_failed_and_is_stored_so(
        native: tuple[Deployment, openai.AsyncOpenAI], door: str) -> None:
    _, client = native
    events = []
    try:
        async for event in await client.responses.create(model="native-1", input="one two three [cut=5]",
                                                         stream=True):
            events.append(event)
    except (openai.InternalServerError, openai.APIConnectionError):
        # through Envoy a reset upstream may also reach the client as Envoy's own 502 or as a cut body, as on a
        # translated route (tests/clients: the Codex and AI SDK failure checks)
        assert door == "envoy"
        return
    assert [event.type for event in events][:2] == ["response.created", "response.in_progress"]
    assert events[-1].type == "response.failed"
    assert failure_reason(events[-1].response.error) == "upstream_connection_error"  # type: ignore[union-attr]
    stored = await client.responses.retrieve(events[0].response.id)  # type: ignore[union-attr]
    assert stored.status == "failed"


async def test_a_native_backend_error_reaches_the_client(native: tuple[Deployment, openai.AsyncOpenAI]) -> None:
    _, client = native
    with pytest.raises(openai.RateLimitError):
        await client.responses.create(model="native-1", input="[error=429]")
    with pytest.raises(openai.InternalServerError) as caught:  # a backend 5xx is the bridge's 502
        await client.responses.create(model="native-1", input="[error=500]")
    assert caught.value.status_code == 502
    # streamed, as on a translated route: the stream opens and ends with response.failed
    events = [event async for event in await client.responses.create(model="native-1", input="[error=503]",
                                                                      stream=True)]
    assert [event.type for event in events] == ["response.created", "response.in_progress", "response.failed"]


async def test_metrics_name_each_upstream_and_its_mode(deployment: Deployment) -> None:
    """The sidecar's own calls all go to Envoy's internal listener (one host:port): the upstream metrics still tell
    the upstreams apart, by their configured names and modes, and only those called have series."""
    from prometheus_client.parser import text_string_to_metric_families

    async with async_sdk(base_url=f"{deployment.http_url}/v1", api_key="sk-client", max_retries=0,
                                  timeout=60) as client:
        await client.responses.create(model="beta", input="counted on b")
        await client.responses.create(model="native-1", input="counted on n")
    async with aiohttp.ClientSession() as session, session.get(f"{deployment.http_url}/metrics") as answer:
        text = await answer.text()
    latency = {(sample.labels["upstream"], sample.labels["mode"]): sample.value
               for family in text_string_to_metric_families(text)
               if family.name == "responses_bridge_upstream_latency_seconds"
               for sample in family.samples if sample.name.endswith("_count")}
    assert latency[("b", "translate")] >= 1 and latency[("n", "native")] >= 1
    assert {name for name, _ in latency} <= {"a", "b", "n"}  # never the listener's host:port
    assert all(count > 0 for count in latency.values())  # no empty series for an upstream never called


async def test_files_by_id_and_references_reach_a_native_backend_resolved(
        native: tuple[Deployment, openai.AsyncOpenAI]) -> None:
    """The backend knows none of the bridge's files and items: it gets their content, the stored input the ids."""
    dep, client = native
    note = await client.files.create(file=("note.md", b"The lamps are in the north depot."), purpose="user_data")
    first = await client.responses.create(model="native-1", input=[{"role": "user", "content": [
        {"type": "input_text", "text": "Read:"}, {"type": "input_file", "file_id": note.id, "detail": "low"}]}])
    assert first.status == "completed"
    [asked] = (await client.responses.input_items.list(first.id)).data
    second = await client.responses.create(model="native-1", previous_response_id=first.id,
                                           input=[{"type": "item_reference", "id": asked.id}])
    assert second.status == "completed"
    sent = await _sent(dep)
    part = sent[0]["input"][0]["content"][1]
    assert part == {"type": "input_text", "text": "[file: note.md]\nThe lamps are in the north depot."}
    assert [item["content"][1] for item in sent[1]["input"] if item.get("role") == "user"] == [part, part]
    listed = (await client.responses.input_items.list(first.id)).data[0]
    assert listed.content[1].file_id == note.id  # type: ignore[union-attr]
