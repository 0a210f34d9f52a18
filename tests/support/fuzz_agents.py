"""Generated requests for the Agents API routes (``client.beta.agents``), judged like every other route
(tests/support/fuzz.py's ``Tally``: never a 5xx, 4xx in the OpenAI shape, always an answer).

Bodies come from the SDK's own request types (``AgentCreateParams``, ``SessionCreateParams``, ``EventCreateParams``,
``CredentialCreateParams``, ``AutomationCreateParams`` …: TypedDicts whose JSON Schema pydantic gives), then a share
of them is damaged as fuzz.py damages the others. Ids are a real agent's, session's, vault's and automation's (so
the deep paths are reached: a session's events, a vault's credentials) or hostile ones.

Left out on purpose: ``stream: true`` on a session's create and the event stream of a real session — both are
streams a client holds open while the session lives (they end when the client goes), not answers to judge.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from functools import cache
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from .fuzz import HOSTILE_VALUE, MODEL, ODD_SHORT, QUERY, Request, Tally, _encode, _quote, from_schema, mutated

BETA = ("OpenAI-Beta", "agents=v1")
JSON = ("Content-Type", "application/json")


@cache
def _params(module: str, name: str) -> dict[str, Any]:
    """The JSON Schema of an SDK request type (``openai.types.beta…``)."""
    import importlib

    return TypeAdapter(getattr(importlib.import_module(f"openai.types.beta.{module}"), name)).json_schema()


def _body(module: str, name: str, *, fix: Callable[[Any], Any] = lambda body: body,
          near: st.SearchStrategy[Any] | None = None) -> st.SearchStrategy[Any]:
    """Bodies of the SDK type ``name``, or (``near``) bodies a client would send — the schema's random strings
    rarely name a real object, so these reach what comes after the look-ups — then damaged or not."""
    schema = _params(module, name)
    fields = tuple(schema.get("properties", {})) or ("type", "name", "target", "environment", "input")
    generated = from_schema(schema)
    if near is None:
        return mutated(generated.map(fix), fields)
    return st.one_of(near.map(fix), mutated(st.one_of(near, generated).map(fix), fields))


def _with_model(body: Any) -> Any:
    return {**body, "model": MODEL} if isinstance(body, dict) and "model" in body else body


def _not_streamed(body: Any) -> Any:
    if isinstance(body, dict):
        body.pop("stream", None)
        if isinstance(body.get("agent"), dict) and "model" in body["agent"]:
            body["agent"] = {**body["agent"], "model": MODEL}
    return body


_TEXT = st.one_of(st.text(max_size=20), ODD_SHORT)
_MESSAGE = st.fixed_dictionaries({"type": st.just("message"), "role": st.just("user"),
                                  "content": st.one_of(_TEXT, st.lists(st.fixed_dictionaries(
                                      {"type": st.just("input_text"), "text": _TEXT}), max_size=2))})
_ENVIRONMENTS = st.one_of(st.just({"type": "none"}), st.fixed_dictionaries(
    {"type": st.sampled_from(["none", "self_hosted", "openai_hosted", "desktop"])},
    optional={"network": HOSTILE_VALUE, "container_size": st.sampled_from(["small", "huge", ""]),
              "packages": HOSTILE_VALUE}))


def _sessions(ids: dict[str, str]) -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries({"agent_id": st.just(ids["agent"]), "environment": _ENVIRONMENTS,
                                  "input": st.one_of(_TEXT, st.lists(_MESSAGE, max_size=2))},
                                 optional={"metadata": st.dictionaries(_TEXT, _TEXT, max_size=2),
                                           "vault_ids": st.lists(st.sampled_from([ids["vault"], "vault_x"]),
                                                                 max_size=2)})


def _events(ids: dict[str, str]) -> st.SearchStrategy[Any]:
    event = st.one_of(
        st.fixed_dictionaries({"type": st.just("agent.session.input.message"), "input": st.lists(_MESSAGE,
                                                                                                max_size=2)}),
        st.fixed_dictionaries({"type": st.just("agent.session.input.cancel")}),
        st.fixed_dictionaries({"type": st.just("agent.session.input.tool_result"), "call_id": _TEXT,
                               "output": _TEXT}))
    return st.fixed_dictionaries({"events": st.lists(event, min_size=1, max_size=3)})


def _credentials(ids: dict[str, str]) -> st.SearchStrategy[Any]:
    named = st.one_of(st.just("n"), _TEXT)
    return st.fixed_dictionaries({"name": named, "auth": st.one_of(
        st.fixed_dictionaries({"type": st.just("static_bearer"), "token": named,
                               "mcp_server_url": st.sampled_from(["https://mcp.example/mcp", "ftp://x", ""])}),
        st.fixed_dictionaries({"type": st.just("environment_variable"), "secret_name": named, "secret_value": named,
                               "networking": st.one_of(st.just({"type": "unrestricted"}), HOSTILE_VALUE)}))})


def _automations(ids: dict[str, str]) -> st.SearchStrategy[Any]:
    target = st.fixed_dictionaries({"type": st.just("new_session"), "agent_id": st.just(ids["agent"]),
                                    "environment": st.just({"type": "none"}),
                                    "input": st.lists(_MESSAGE, min_size=1, max_size=2)})
    return st.fixed_dictionaries({"type": st.just("once"), "name": _TEXT, "target": target,
                                  "run_at": st.sampled_from([4_102_444_800, 0, -1, 10**20])})


BODIES: dict[str, Callable[[dict[str, str]], st.SearchStrategy[Any]]] = {
    "POST /v1/agents": lambda ids: _body("agent_create_params", "AgentCreateParams", fix=_with_model),
    "POST /v1/agents/{agent}": lambda ids: _body("agent_update_params", "AgentUpdateParams", fix=_with_model),
    "POST /v1/agents/sessions": lambda ids: _body("agents.session_create_params", "SessionCreateParams",
                                                  fix=_not_streamed, near=_sessions(ids)),
    "POST /v1/agents/sessions/{session}": lambda ids: _body("agents.session_update_params", "SessionUpdateParams"),
    "POST /v1/agents/sessions/{session}/events": lambda ids: _body("agents.sessions.event_create_params",
                                                                   "EventCreateParams", near=_events(ids)),
    "POST /v1/vaults": lambda ids: _body("agents.vault_create_params", "VaultCreateParams"),
    "POST /v1/vaults/{vault}": lambda ids: _body("agents.vault_update_params", "VaultUpdateParams"),
    "POST /v1/vaults/{vault}/credentials": lambda ids: _body("agents.vaults.credential_create_params",
                                                             "CredentialCreateParams", near=_credentials(ids)),
    "POST /v1/agents/automations": lambda ids: _body("agents.automation_create_params", "AutomationCreateParams",
                                                     near=_automations(ids)),
    "POST /v1/agents/automations/{automation}": lambda ids: _body("agents.automation_update_params",
                                                                  "AutomationUpdateParams"),
}
READS = ["GET /v1/agents", "GET /v1/agents/{agent}", "DELETE /v1/agents/{id}",
         "GET /v1/agents/sessions", "GET /v1/agents/sessions/{session}", "DELETE /v1/agents/sessions/{id}",
         "GET /v1/agents/sessions/{id}/events", "GET /v1/agents/sessions/{session}/turns",
         "GET /v1/agents/sessions/{session}/turns/{id}", "GET /v1/agents/sessions/{session}/turns/{id}/items",
         "GET /v1/agents/sessions/{session}/items", "GET /v1/agents/sessions/{session}/artifacts",
         "GET /v1/agents/sessions/{session}/artifacts/{id}", "GET /v1/agents/sessions/{session}/artifacts/{id}/content",
         "GET /v1/vaults", "GET /v1/vaults/{vault}", "DELETE /v1/vaults/{id}", "GET /v1/vaults/{vault}/credentials",
         "GET /v1/vaults/{vault}/credentials/{id}", "DELETE /v1/vaults/{vault}/credentials/{id}",
         "GET /v1/agents/automations", "GET /v1/agents/automations/{automation}",
         "POST /v1/agents/automations/{id}/pause", "POST /v1/agents/automations/{id}/resume",
         "GET /v1/agents/automations/{automation}/invocations",
         "GET /v1/agents/automations/{automation}/invocations/{id}"]
ROUTES = [*BODIES, *READS]

_IDS = st.one_of(st.sampled_from(["agent_missing", "sess_missing", "vault_missing", "cred_missing", "auto_missing",
                                  "turn_missing", "art_missing", "sess_", ""]), st.text(max_size=12), ODD_SHORT)
_QUERY = st.one_of(QUERY, st.dictionaries(
    st.sampled_from(["limit", "order", "after", "status", "session_id", "agent_id", "until_idle", "turn_id"]),
    st.one_of(st.text(max_size=10), st.integers(-5, 1000).map(str), ODD_SHORT,
              st.sampled_from(["true", "asc", "desc", "active", "archived"])), max_size=3))


def fresh_objects(base_url: str) -> dict[str, str]:
    """A real agent, a session over it (environment ``none``, idle after its first turn), a vault and a paused
    automation: the ids the deep paths are reached with."""

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(f"{base_url}{path}", data=json.dumps(body).encode(), method="POST",
                                         headers=dict((BETA, JSON)))
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return dict(json.loads(answer.read()))
        except urllib.error.HTTPError as error:
            raise AssertionError(f"{path}: {error.code} {error.read()[:500]!r}") from None

    agent = post("/v1/agents", {"model": MODEL, "name": "fuzzed"})
    session = post("/v1/agents/sessions", {"agent_id": agent["id"], "environment": {"type": "none"}, "input": "hi"})
    vault = post("/v1/vaults", {"name": "fuzzed"})
    automation = post("/v1/agents/automations", {
        "type": "once", "name": "fuzzed", "run_at": 4_102_444_800,  # 2100: never fires while the test runs
        "target": {"type": "new_session", "agent_id": agent["id"], "environment": {"type": "none"},
                   "input": [{"type": "message", "role": "user",
                              "content": [{"type": "input_text", "text": "hi"}]}]}})
    return {"agent": agent["id"], "session": session["id"], "vault": vault["id"], "automation": automation["id"]}


def _route(route: str, ids: dict[str, str]) -> st.SearchStrategy[Request]:
    method, template = route.split(" ", 1)
    for name, value in ids.items():
        template = template.replace("{" + name + "}", value)

    def build(ident: str, query: dict[str, str], body: bytes | None) -> Request:
        path = template.replace("{id}", _quote(ident))
        if query:
            path += "?" + "&".join(f"{_quote(key)}={_quote(value)}" for key, value in query.items())
        return Request(method, path, body, (BETA, JSON) if body is not None else (BETA,))

    if route in BODIES:
        bodies = BODIES[route](ids)
        raw = st.one_of(bodies.map(_encode), bodies.map(_encode), HOSTILE_VALUE.map(_encode),
                        st.binary(max_size=40))
        return st.builds(build, _IDS, st.one_of(st.just({}), st.just({}), _QUERY), raw)
    return st.builds(build, _IDS, _QUERY, st.none())


def run_agents(tally: Tally, route: str, examples: int, ids: dict[str, str]) -> Tally:
    """``examples`` generated requests to one Agents API route through one door, the same ones on every run."""

    @settings(max_examples=examples, derandomize=True, database=None, deadline=None, print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(_route(route, ids))
    def one(request: Request) -> None:
        tally.send(request)

    one()
    return tally
