"""Schema-based fuzzing of every HTTP route, for the test suite and ``scripts/fuzz``.

Requests are generated, not hand-picked: ``POST /v1/responses`` (and ``input_tokens``, ``compact``) bodies come
from the Open Responses request schemas (the ``openresponses-types`` pydantic models' JSON schemas, turned into
hypothesis strategies by :func:`from_schema`), the other routes' bodies and ids from their documented fields.
Then a share of them is damaged the ways hostile clients do: a field of the wrong type, a missing field, huge
numbers, odd unicode and NULs, deep nesting, bodies that are not JSON objects at all.

Each answer must keep three promises: a status below 500; for a status of 400 or more, a body in the OpenAI
error shape ``{"error": {"message", "type", "param", "code"}}``; and an answer at all, within the client's
timeout. :class:`Tally` counts what came back; ``strict`` raises on the first broken promise (the test suite),
otherwise everything runs and the counts are printed (``scripts/fuzz``).

(hypothesis-jsonschema would do the schema part, but its 0.23 release does not run on current hypothesis; the
subset of JSON Schema that pydantic emits is small enough to translate here.)
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ERROR_KEYS = {"message", "type", "param", "code"}
MODEL = "fake-model"
TIMEOUT = 60.0  # seconds: an answer slower than this counts as a hang

# --- JSON Schema -> strategy ------------------------------------------------------------------------------------

JSON_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
ANY_JSON = st.recursive(JSON_LEAVES, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                             st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                        max_leaves=8)


def from_schema(schema: dict[str, Any], defs: dict[str, Any] | None = None, depth: int = 0) -> st.SearchStrategy[Any]:
    """A strategy for values matching ``schema`` (pydantic's JSON Schema: ``$ref`` into ``$defs``, anyOf/oneOf,
    enum/const, typed objects and arrays). Depth is bounded: past it, objects keep only their required fields and
    arrays stay empty, so recursive item types stay finite."""
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return st.deferred(lambda: from_schema(defs[name], defs, depth + 1))
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return st.one_of([from_schema(option, defs, depth) for option in schema[key]])
    if "allOf" in schema:
        return from_schema(schema["allOf"][0], defs, depth)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**schema, "type": one}, defs, depth) for one in kind])
    if kind == "string":
        return st.text(min_size=schema.get("minLength", 0), max_size=min(schema.get("maxLength", 30), 30))
    if kind == "integer":
        return st.integers(schema.get("minimum", -1000), schema.get("maximum", 100_000))
    if kind == "number":
        # unbounded numbers in the schema are sampling parameters (temperature, top_p): mostly in range, the
        # mutations below send the rest
        return st.floats(schema.get("minimum", 0.0), schema.get("maximum", 1.0), allow_nan=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        items = from_schema(schema.get("items", {}), defs, depth + 1)
        return st.lists(items, max_size=0 if depth > 5 else 3)
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        required = set(schema.get("required", ()))
        fixed = {name: from_schema(sub, defs, depth + 1) for name, sub in properties.items() if name in required}
        optional = {} if depth > 5 else {name: from_schema(sub, defs, depth + 1)
                                         for name, sub in properties.items() if name not in required}
        if not properties and schema.get("additionalProperties") not in (None, False):
            extra = schema["additionalProperties"]
            values = from_schema(extra, defs, depth + 1) if isinstance(extra, dict) else ANY_JSON
            return st.dictionaries(st.text(max_size=10), values, max_size=3)
        return st.fixed_dictionaries(fixed, optional=optional)
    return ANY_JSON


def _schema(model_name: str) -> dict[str, Any]:
    from openresponses_types import types

    return getattr(types, model_name).model_json_schema()


# --- hostile mutations -------------------------------------------------------------------------------------------

ODD_SHORT = st.sampled_from(["", "\x00", "a\x00b", "\ud800", "\u202e\u0635", "\U0001f600" * 5, "{{x}}", "%00",
                             "../../etc/passwd", "' OR 1=1 --", "\r\nX-Injected: 1", "null", "a" * 9000, "a" * 70_000])
ODD_TEXT = st.one_of(ODD_SHORT, st.sampled_from([70_000, 1_000_000]).map(lambda size: "a" * size))
HUGE_NUMBERS = st.sampled_from([10**30, -(10**30), 2**63, -(2**63) - 1, 1e308, -1e308, 5e-324, 0, -1])


def _nested(depth: int) -> Any:
    value: Any = "x"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


DEEP = st.sampled_from([60, 99, 101, 130, 300, 900]).map(_nested)
HOSTILE_VALUE = st.one_of(ODD_TEXT, HUGE_NUMBERS, DEEP, ANY_JSON, st.lists(ODD_TEXT, max_size=3),
                          st.dictionaries(ODD_TEXT, ODD_TEXT, max_size=3))


@st.composite
def mutated(draw: st.DrawFn, body: st.SearchStrategy[dict[str, Any]], fields: tuple[str, ...]) -> Any:
    """A valid-ish body, left alone or damaged: a field replaced by a hostile value or removed, a hostile field
    added, or the whole body swapped for something that is not an object."""
    value = draw(body)
    how = draw(st.sampled_from(["keep", "replace", "replace", "drop", "add", "not_object"]))
    if how == "not_object":
        return draw(st.one_of(HOSTILE_VALUE, st.just([value])))
    if not isinstance(value, dict):
        return value
    value = dict(value)
    keys = sorted(set(value) | set(fields))
    if how == "replace" and keys:
        value[draw(st.sampled_from(keys))] = draw(HOSTILE_VALUE)
    elif how == "drop" and value:
        value.pop(draw(st.sampled_from(sorted(value))))
    elif how == "add":
        value[draw(ODD_TEXT)] = draw(HOSTILE_VALUE)
    return value


# --- the requests -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        body = (self.body or b"")[:300]
        return f"{self.method} {self.path[:200]} {body!r}"


def _encode(value: Any) -> bytes:
    return json.dumps(value).encode()  # ensure_ascii: a lone surrogate travels as its \\ud800 escape


IDS = st.one_of(st.sampled_from(["resp_missing", "conv_missing", "pmpt_missing", "msg_missing", "resp_", ""]),
                st.text(max_size=12), ODD_SHORT)
QUERY = st.dictionaries(st.sampled_from(["limit", "order", "after", "before", "include", "stream",
                                         "starting_after", "version", "model", "status", "metadata[k]"]),
                        st.one_of(st.text(max_size=10), st.integers(-5, 1000).map(str), HUGE_NUMBERS.map(str),
                                  st.just("\u00b2"), ODD_SHORT), max_size=3)


def _quote(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")  # lone surrogates too, as their bytes


def _path(template: str, ident: str, query: dict[str, str]) -> str:
    path = template.replace("{id}", _quote(ident)).replace("{item}", _quote(ident[::-1]))
    if query:
        path += "?" + "&".join(f"{_quote(key)}={_quote(value)}" for key, value in query.items())
    return path


def _create_bodies() -> st.SearchStrategy[dict[str, Any]]:
    def with_model(body: dict[str, Any]) -> dict[str, Any]:
        # a model the fake upstream serves, so the request can go all the way through (mutations drop or
        # damage it often enough)
        return {**body, "model": MODEL} if isinstance(body, dict) else body

    return from_schema(_schema("CreateResponseBody")).map(with_model)


CREATE_FIELDS = ("model", "input", "instructions", "tools", "tool_choice", "text", "include", "metadata",
                 "previous_response_id", "conversation", "prompt", "stream", "store", "background", "reasoning",
                 "max_output_tokens", "temperature", "top_p", "truncation", "parallel_tool_calls")
CONVERSATION_FIELDS = ("items", "metadata")
PROMPT_FIELDS = ("name", "instructions", "variables", "metadata", "version")

_ITEM = st.one_of(
    st.fixed_dictionaries({"type": st.just("message"), "role": st.sampled_from(["user", "assistant", "system"]),
                           "content": st.one_of(st.text(max_size=20), ODD_TEXT)}),
    st.fixed_dictionaries({"type": st.just("function_call_output"), "call_id": st.text(max_size=8),
                           "output": st.text(max_size=8)}),
    ANY_JSON,
)
_CONVERSATION = st.fixed_dictionaries({}, optional={"items": st.lists(_ITEM, max_size=3),
                                                    "metadata": st.dictionaries(st.text(max_size=5),
                                                                                st.text(max_size=5), max_size=3)})
_PROMPT = st.fixed_dictionaries({"instructions": st.one_of(st.just("Hi {{name}}"), st.text(max_size=20))},
                                optional={"name": st.text(max_size=10),
                                          "variables": st.one_of(st.lists(st.text(max_size=5), max_size=3),
                                                                 st.dictionaries(st.text(max_size=5),
                                                                                 st.one_of(st.none(),
                                                                                           st.text(max_size=5)),
                                                                                 max_size=3), ANY_JSON),
                                          "metadata": ANY_JSON, "version": st.text(max_size=3)})


CHAT_FIELDS = ("model", "messages", "store", "metadata", "stream")
_CHAT_METADATA = st.fixed_dictionaries({}, optional={"metadata": st.one_of(
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3), ANY_JSON)})
_CHAT_CREATE = st.fixed_dictionaries({"model": st.just(MODEL), "store": st.just(True),
                                      "messages": st.just([{"role": "user", "content": "hi"}])},
                                     optional={"metadata": st.dictionaries(st.text(max_size=5), st.text(max_size=5),
                                                                           max_size=3),
                                               "stream": st.booleans()})


def requests() -> st.SearchStrategy[Request]:
    """Every route of the HTTP door, with generated bodies, ids and query strings."""
    create = mutated(_create_bodies(), CREATE_FIELDS)
    compact = mutated(from_schema(_schema("CompactResponseMethodPublicBody")), ("model", "input",
                                                                               "previous_response_id"))
    bodies: dict[str, st.SearchStrategy[Any]] = {
        "POST /v1/responses": create,
        "POST /v1/responses/input_tokens": create,
        "POST /v1/responses/compact": compact,
        "POST /v1/responses/{id}/cancel": st.one_of(st.none(), HOSTILE_VALUE),
        "POST /v1/conversations": mutated(_CONVERSATION, CONVERSATION_FIELDS),
        "POST /v1/conversations/{id}": mutated(_CONVERSATION, CONVERSATION_FIELDS),
        "POST /v1/conversations/{id}/items": mutated(_CONVERSATION, CONVERSATION_FIELDS),
        "POST /v1/chat/completions": mutated(_CHAT_CREATE, CHAT_FIELDS),
        "POST /v1/chat/completions/{id}": mutated(_CHAT_METADATA, ("metadata",)),
        "POST /v1/prompts": mutated(_PROMPT, PROMPT_FIELDS),
        "POST /v1/prompts/{id}": mutated(_PROMPT, PROMPT_FIELDS),
        "PUT /v1/prompts/{id}": mutated(_PROMPT, PROMPT_FIELDS),
        "POST /v1/prompts/{id}/default_version": mutated(st.fixed_dictionaries({"version": st.text(max_size=3)}),
                                                         ("version",)),
    }
    no_body = ["GET /v1/responses", "GET /v1/conversations",
               "GET /v1/responses/{id}", "DELETE /v1/responses/{id}", "GET /v1/responses/{id}/input_items",
               "GET /v1/conversations/{id}", "DELETE /v1/conversations/{id}", "GET /v1/conversations/{id}/items",
               "GET /v1/conversations/{id}/items/{item}", "DELETE /v1/conversations/{id}/items/{item}",
               "GET /v1/prompts", "GET /v1/prompts/{id}", "GET /v1/prompts/{id}/versions",
               "DELETE /v1/prompts/{id}", "GET /v1/models/{id}", "GET /v1/chat/completions",
               "GET /v1/chat/completions/{id}", "DELETE /v1/chat/completions/{id}",
               "GET /v1/chat/completions/{id}/messages", "GET /health"]
    # not GET /v1/models (the list): through Envoy it is the upstream's own answer, passed through untouched by
    # design; one model is the sidecar's on both doors

    def with_body(route: str) -> st.SearchStrategy[Request]:
        method, template = route.split(" ", 1)
        raw = st.one_of(bodies[route].map(_encode), st.binary(max_size=40))
        return st.builds(lambda ident, query, body: Request(method, _path(template, ident, query), body,
                                                            (("Content-Type", "application/json"),)),
                         IDS, QUERY, st.one_of(raw, bodies[route].map(_encode), bodies[route].map(_encode)))

    def without_body(route: str) -> st.SearchStrategy[Request]:
        method, template = route.split(" ", 1)
        return st.builds(lambda ident, query: Request(method, _path(template, ident, query)), IDS, QUERY)

    routes = [with_body(route) for route in bodies] + [without_body(route) for route in no_body]
    # the create is the route that does the most: about half of the examples go to it
    return st.one_of(create.map(lambda body: Request("POST", "/v1/responses", _encode(body),
                                                     (("Content-Type", "application/json"),))),
                     st.one_of(routes))


def listed_inputs() -> list[Request]:
    """The hostile inputs of the hardening work, by hand, so ``scripts/fuzz`` counts them too (their exact
    answers are asserted in tests/integration/test_hostile_input.py)."""
    import gzip
    import zlib

    create = b'{"model": "fake-model", "input": "hi"}'
    json_type = ("Content-Type", "application/json")

    def post(path: str, body: Any, *headers: tuple[str, str]) -> Request:
        return Request("POST", path, body if isinstance(body, bytes) else _encode(body), (json_type, *headers))

    deep: dict[str, Any] = {"type": "string"}
    for _ in range(130):
        deep = {"type": "object", "properties": {"x": deep}}
    return [
        post("/v1/prompts", {"instructions": "x", "variables": [["a"]]}),
        post("/v1/prompts", {"instructions": "x", "variables": [{"a": 1}]}),
        post("/v1/responses", {"model": MODEL, "input": "x", "tools": [{"type": "function", "name": "f",
                                                                          "parameters": deep}]}),
        post("/v1/responses", {"model": MODEL, "input": "x", "text": {"format": {"type": "json_schema",
                                                                               "name": "s", "schema": deep}}}),
        post("/v1/responses", create, ("Content-Encoding", "gzip")),
        post("/v1/responses", gzip.compress(create), ("Content-Encoding", "gzip")),
        post("/v1/responses", create, ("Content-Encoding", "deflate")),
        post("/v1/responses", zlib.compress(create), ("Content-Encoding", "deflate")),
        post("/v1/responses", create, ("Content-Encoding", "br")),
        Request("GET", "/v1/responses/resp_x?q=" + "a" * 9000),
        Request("GET", "/v1/responses/resp_x?q=" + "a" * 70_000),
        Request("GET", "/v1/responses/resp_x", None, (("X-Big", "a" * 65536),)),
        Request("GET", "/v1/responses/resp_x", None, tuple((f"X-H{index}", "v") for index in range(500))),
        Request("GET", "/v1/responses/resp_%00abc"),
        post("/v1/responses", {"model": MODEL, "input": "x", "tool_choice": {"type": "banana"}}),
        post("/v1/responses", {"model": MODEL, "input": "x", "include": ["banana"]}),
        post("/v1/responses", {"model": "fake\u0000model", "input": "x"}),
        post("/v1/responses", {"model": MODEL, "input": [{"type": "function_call_output", "call_id": "call_none",
                                                          "output": "x"}]}),
    ]


# --- sending and judging ----------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What came back. ``strict``: raise on the first broken promise (pytest shrinks it to a small example)."""

    base_url: str
    strict: bool = True
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    bad_shapes: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)  # no answer in time, or the connection closed without one

    @property
    def sent(self) -> int:
        return sum(self.statuses.values()) + len(self.hangs)

    def send(self, request: Request) -> None:
        parts = urlsplit(self.base_url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT)
        try:
            # the server may answer early (e.g. a 431 for the head) and close while the body is going out
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                connection.request(request.method, request.path, body=request.body, headers=dict(request.headers))
            response = connection.getresponse()
            status, content_type, body = response.status, response.getheader("Content-Type", ""), response.read()
        except TimeoutError:
            self._broken(self.hangs, f"no answer in {TIMEOUT:.0f} s: {request.describe()}")
            return
        except (http.client.HTTPException, OSError) as exc:
            self._broken(self.hangs, f"connection closed without an answer ({exc!r}): {request.describe()}")
            return
        finally:
            connection.close()
        self.statuses[status] += 1
        if status >= 500:
            self._broken(self.server_errors, f"{status} {body[:300]!r} for {request.describe()}")
        elif status >= 400 and not _openai_error(content_type, body):
            self._broken(self.bad_shapes, f"{status} {content_type} {body[:300]!r} for {request.describe()}")

    def _broken(self, where: list[str], what: str) -> None:
        where.append(what)
        if self.strict:
            raise AssertionError(what)

    def summary(self, door: str) -> str:
        statuses = ", ".join(f"{status}: {count}" for status, count in sorted(self.statuses.items()))
        lines = [(f"{door}: {self.sent} requests; statuses >= 500: {len(self.server_errors)}; error bodies outside "
                  f"the OpenAI shape: {len(self.bad_shapes)}; hangs: {len(self.hangs)}  ({statuses})")]
        lines += [f"  {kind}: {example}" for kind, examples in (("5xx", self.server_errors),
                                                                 ("shape", self.bad_shapes), ("hang", self.hangs))
                  for example in examples[:5]]
        return "\n".join(lines)


def _openai_error(content_type: str, body: bytes) -> bool:
    if not content_type.startswith("application/json"):
        return False
    try:
        parsed = json.loads(body)
    except ValueError:
        return False
    return (isinstance(parsed, dict) and set(parsed) == {"error"} and isinstance(parsed["error"], dict)
            and set(parsed["error"]) == ERROR_KEYS and isinstance(parsed["error"]["message"], str))


def run(tally: Tally, examples: int) -> Tally:
    """Send ``examples`` generated requests (deterministically: the same ones on every run) through one door."""

    @settings(max_examples=examples, derandomize=True, database=None, deadline=None, print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(requests())
    def one(request: Request) -> None:
        tally.send(request)

    one()
    return tally


# --- WebSocket mode ---------------------------------------------------------------------------------------------

TERMINAL = frozenset({"response.completed", "response.failed", "response.incomplete", "error"})


@dataclass
class SocketTally:
    """WebSocket mode (``GET /v1/responses`` upgraded): every message is answered by a terminal event or an
    ``error`` frame whose ``status`` is below 500 and whose ``error`` is OpenAI-shaped, and the socket stays open
    for the next turn."""

    base_url: str
    strict: bool = True
    turns: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    broken: list[str] = field(default_factory=list)

    def check(self, message: str, frames: list[dict[str, Any]] | None) -> None:
        self.turns += 1
        what = None
        if frames is None:
            what = f"no terminal frame in {TIMEOUT:.0f} s for {message[:300]!r}"
        else:
            last = frames[-1]
            self.kinds[last.get("type", "?")] += 1
            if last.get("type") == "error":
                error = last.get("error")
                if not isinstance(last.get("status"), int) or last["status"] >= 500:
                    what = f"error frame with status {last.get('status')!r} for {message[:300]!r}: {last}"
                elif not isinstance(error, dict) or set(error) != ERROR_KEYS:
                    what = f"error frame outside the OpenAI shape for {message[:300]!r}: {last}"
        if what is not None:
            self.broken.append(what)
            if self.strict:
                raise AssertionError(what)

    def summary(self, door: str) -> str:
        kinds = ", ".join(f"{kind}: {count}" for kind, count in sorted(self.kinds.items()))
        lines = [f"{door}: {self.turns} WebSocket turns; broken: {len(self.broken)}  ({kinds})"]
        return "\n".join(lines + [f"  {example}" for example in self.broken[:5]])


def run_websocket(tally: SocketTally, examples: int) -> SocketTally:
    """``examples`` generated create events (or damaged ones) sent as turns on one socket, one after another."""
    from websockets.sync.client import connect

    url = "ws" + tally.base_url.removeprefix("http") + "/v1/responses"
    events = mutated(_create_bodies().map(lambda body: {"type": "response.create", **body}),
                     ("type", *CREATE_FIELDS))
    with connect(url, max_size=None, open_timeout=TIMEOUT) as socket:

        @settings(max_examples=examples, derandomize=True, database=None, deadline=None, print_blob=False,
                  suppress_health_check=list(HealthCheck))
        @given(events)
        def one(event: Any) -> None:
            message = json.dumps(event)
            socket.send(message)
            frames: list[dict[str, Any]] = []
            try:
                while not frames or frames[-1].get("type") not in TERMINAL:
                    frames.append(json.loads(socket.recv(timeout=TIMEOUT)))
            except TimeoutError:
                tally.check(message, None)
                return
            tally.check(message, frames)

        one()
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fuzz the bridge's doors with schema-generated requests.")
    parser.add_argument("--examples", type=int, default=10_000, help="requests per door (default 10000)")
    parser.add_argument("urls", nargs="+", help="door=URL, e.g. http=http://127.0.0.1:8081")
    args = parser.parse_args(argv)
    failed = False
    for spec in args.urls:
        door, _, url = spec.partition("=")
        started = time.monotonic()
        listed = Tally(url, strict=False)
        for request in listed_inputs():
            listed.send(request)
        print(listed.summary(f"{door}, the listed hostile inputs"), flush=True)
        tally = run(Tally(url, strict=False), args.examples)
        print(tally.summary(f"{door}, generated"), f"\n  {time.monotonic() - started:.0f} s", flush=True)
        failed = failed or bool(listed.server_errors or listed.bad_shapes or listed.hangs)
        sockets = run_websocket(SocketTally(url, strict=False), max(1, args.examples // 10))
        print(sockets.summary(f"{door}, WebSocket mode"), flush=True)
        failed = failed or bool(sockets.broken)
        failed = failed or bool(tally.server_errors or tally.bad_shapes or tally.hangs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
