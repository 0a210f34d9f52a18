"""Generated ``POST /v1/embeddings`` requests, judged like every other route (tests/support/fuzz.py's ``Tally``:
never a 5xx, 4xx in the OpenAI shape, always an answer): plausible bodies for the local model (strings, token
ids, token-id lists, both encodings, ``dimensions`` in and out of range), damaged by the shared mutations."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .fuzz import HUGE_NUMBERS, ODD_SHORT, QUERY, Request, Tally, _encode, _path, mutated

MODEL = "tokenlearn-static-model"
FIELDS = ("model", "input", "encoding_format", "dimensions", "user")

_TOKENS = st.lists(st.one_of(st.integers(0, 100_300), HUGE_NUMBERS), max_size=6)
_INPUT = st.one_of(st.text(max_size=40), ODD_SHORT, st.lists(st.one_of(st.text(max_size=20), ODD_SHORT), max_size=4),
                   _TOKENS, st.lists(_TOKENS, max_size=3))
_BODY: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {"model": st.one_of(st.just(MODEL), st.just(MODEL), st.text(max_size=10)), "input": _INPUT},
    optional={"encoding_format": st.sampled_from(["float", "base64", "int8", ""]),
              "dimensions": st.one_of(st.integers(-2, 70), HUGE_NUMBERS), "user": st.text(max_size=10)})


def embedding_requests() -> st.SearchStrategy[Request]:
    bodies = mutated(_BODY, FIELDS)
    raw = st.one_of(bodies.map(_encode), bodies.map(_encode), bodies.map(_encode), st.binary(max_size=40))
    return st.builds(lambda query, body: Request("POST", _path("/v1/embeddings", "", query), body,
                                                 (("Content-Type", "application/json"),)), QUERY, raw)


def run_embeddings(tally: Tally, examples: int) -> Tally:
    """``examples`` generated embeddings requests through one door, the same ones on every run."""

    @settings(max_examples=examples, derandomize=True, database=None, deadline=None, print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(embedding_requests())
    def one(request: Request) -> None:
        tally.send(request)

    one()
    return tally
