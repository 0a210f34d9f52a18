"""Generated requests for the Containers API routes, judged like every other route (tests/support/fuzz.py's
``Tally``: never a 5xx, 4xx in the OpenAI shape, always an answer): hostile JSON for creating containers and
adding files by id, damaged multipart uploads into a real container, and hostile ids and queries on every read and
delete."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .fuzz import ANY_JSON, HUGE_NUMBERS, ODD_SHORT, Request, Tally, _path
from .fuzz_files import upload_requests

_NAMES = st.one_of(st.text(max_size=20), ODD_SHORT, HUGE_NUMBERS, st.none(), ANY_JSON)
_EXPIRY = st.one_of(st.none(), ANY_JSON, st.fixed_dictionaries(
    {"anchor": st.sampled_from(["last_active_at", "created_at", "", None]),
     "minutes": st.one_of(st.integers(-5, 20_000), HUGE_NUMBERS, st.booleans(), st.text(max_size=3))}))
_FILE_IDS = st.one_of(st.none(), ANY_JSON, st.lists(st.one_of(st.sampled_from(["file-" + "0" * 32, "file-x", ""]),
                                                              ODD_SHORT), max_size=3))


@st.composite
def create_requests(draw: st.DrawFn) -> Request:
    body: dict[str, Any] = {}
    for key, values in (("name", _NAMES), ("expires_after", _EXPIRY), ("file_ids", _FILE_IDS),
                        ("memory_limit", st.one_of(st.sampled_from(["1g", "4g", "2g", ""]), ANY_JSON))):
        if draw(st.booleans()):
            body[key] = draw(values)
    raw = json.dumps(body).encode() if draw(st.integers(0, 9)) else draw(st.binary(max_size=60))
    return Request("POST", "/v1/containers", raw, (("Content-Type", "application/json"),))


_IDS = st.one_of(st.sampled_from(["cntr_" + "0" * 32, "cntr_", "..", "cfile_x", ""]), st.text(max_size=12), ODD_SHORT)
_QUERY = st.dictionaries(st.sampled_from(["limit", "order", "after", "name"]),
                         st.one_of(st.text(max_size=10), st.integers(-5, 20_000).map(str), HUGE_NUMBERS.map(str),
                                   st.sampled_from(["asc", "desc"]), ODD_SHORT), max_size=3)


def container_requests(container_id: str) -> st.SearchStrategy[Request]:
    reads = ["GET /v1/containers", "GET /v1/containers/{id}", "DELETE /v1/containers/{id}",
             "GET /v1/containers/{id}/files", "GET /v1/containers/{cid}/files/{id}",
             "DELETE /v1/containers/{cid}/files/{id}", "GET /v1/containers/{cid}/files/{id}/content"]

    def read(route: str) -> st.SearchStrategy[Request]:
        method, template = route.split(" ", 1)
        template = template.replace("{cid}", container_id)
        return st.builds(lambda ident, query: Request(method, _path(template, ident, query)), _IDS, _QUERY)

    def upload(request: Request) -> Request:
        return Request("POST", f"/v1/containers/{container_id}/files", request.body, request.headers)

    by_id = st.builds(lambda value: Request("POST", f"/v1/containers/{container_id}/files",
                                            json.dumps({"file_id": value}).encode(),
                                            (("Content-Type", "application/json"),)),
                      st.one_of(ANY_JSON, _IDS))
    return st.one_of(create_requests(), create_requests(), upload_requests().map(upload), by_id,
                     *[read(route) for route in reads])


def run_containers(tally: Tally, container_id: str, examples: int) -> Tally:
    """``examples`` generated Containers API requests through one door, the same ones on every run."""

    @settings(max_examples=examples, derandomize=True, database=None, deadline=None, print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(container_requests(container_id))
    def one(request: Request) -> None:
        if request.method == "DELETE" and request.path.rstrip("/").endswith(container_id):
            return  # the container the uploads go to stays
        tally.send(request)

    one()
    return tally


_DOMAINS = st.one_of(st.sampled_from(["example.com", "*.example.com", "127.0.0.1", "[::1]", "*.", "*", "a..b", "",
                                      "bücher.example", "xn--", "-a.com", "a" * 70 + ".com", "*.10.0.0.1"]),
                     st.text(max_size=20), ODD_SHORT, ANY_JSON)
_SECRETS = st.one_of(ANY_JSON, st.lists(st.one_of(ANY_JSON, st.fixed_dictionaries(
    {"domain": _DOMAINS, "name": st.one_of(st.sampled_from(["API_KEY", "PATH", "LD_PRELOAD", "1X", "", "HTTP_PROXY"]),
                                           st.text(max_size=10), ANY_JSON),
     "value": st.one_of(st.sampled_from(["v", "", "a\r\nX-Evil: 1", "é", "x" * 9000]), st.text(max_size=10),
                        ANY_JSON)})), max_size=3))
NETWORK_POLICIES = st.one_of(
    ANY_JSON, st.sampled_from([{"type": "disabled"}, {"type": "allowlist"}, {"type": "open"}, {}]),
    st.fixed_dictionaries({"type": st.sampled_from(["allowlist", "disabled", "Allowlist", ""])},
                          optional={"allowed_domains": st.one_of(ANY_JSON, st.lists(_DOMAINS, max_size=4)),
                                    "domain_secrets": _SECRETS, "extra": ANY_JSON}))


@st.composite
def policy_requests(draw: st.DrawFn) -> Request:
    """``POST /v1/containers`` with a ``network_policy``, hostile or fine (then a container is made)."""
    body: dict[str, Any] = {"name": draw(st.one_of(st.just("fuzzed policy"), _NAMES)),
                            "network_policy": draw(NETWORK_POLICIES)}
    return Request("POST", "/v1/containers", json.dumps(body).encode(), (("Content-Type", "application/json"),))


def run_network_policies(tally: Tally, examples: int) -> Tally:
    """``examples`` generated containers with network policies through one door, the same ones on every run."""

    @settings(max_examples=examples, derandomize=True, database=None, deadline=None, print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(policy_requests())
    def one(request: Request) -> None:
        tally.send(request)

    one()
    return tally
