"""Generated requests for the Uploads API routes, judged like every other route (tests/support/fuzz.py's ``Tally``:
never a 5xx, 4xx in the OpenAI shape, always an answer).

Creates are plausible bodies damaged one way or another (tests/support/fuzz.py's ``mutated``); parts are hostile
multipart forms (tests/support/fuzz_files.py's, with ``data`` for ``file``) sent to a real pending upload or to
hostile ids; completes name real, missing and hostile part ids with good and bad MD5s; cancels hostile ids.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .fuzz import HUGE_NUMBERS, ODD_SHORT, Request, Tally, _encode, _path, mutated
from .fuzz_files import PURPOSES, upload_requests

CREATE_FIELDS = ("bytes", "filename", "mime_type", "purpose", "expires_after")
_CREATE = st.fixed_dictionaries({
    "bytes": st.one_of(st.integers(0, 1 << 20), HUGE_NUMBERS),
    "filename": st.one_of(st.sampled_from(["a.txt", "../../x", "", "a\x00b"]), ODD_SHORT),
    "mime_type": st.one_of(st.sampled_from(["text/plain", "pdf", ""]), ODD_SHORT),
    "purpose": st.sampled_from([*PURPOSES, "nope"]),
}, optional={"expires_after": st.fixed_dictionaries({"anchor": st.sampled_from(["created_at", "x"]),
                                                     "seconds": st.one_of(st.integers(0, 3_000_000),
                                                                          HUGE_NUMBERS)})})


def upload_requests_for(upload_id: str, part_ids: list[str]) -> st.SearchStrategy[Request]:
    """Every route, aimed at ``upload_id`` (pending, holding ``part_ids``) or at hostile ids."""
    ids = st.one_of(st.just(upload_id), st.sampled_from(["upload_" + "0" * 32, "upload_", "..", "", "part_x"]),
                    ODD_SHORT)
    complete = st.fixed_dictionaries({"part_ids": st.lists(st.one_of(st.sampled_from(part_ids), ODD_SHORT),
                                                           max_size=4)},
                                     optional={"md5": st.one_of(st.just("0" * 32), ODD_SHORT)})

    def create(body: Any) -> Request:
        return Request("POST", "/v1/uploads", _encode(body), (("Content-Type", "application/json"),))

    def part(ident: str, form: Request) -> Request:
        body = (form.body or b"").replace(b'name="file"', b'name="data"')
        return Request("POST", _path("/v1/uploads/{id}/parts", ident, {}), body, form.headers)

    def finish(ident: str, body: Any) -> Request:
        return Request("POST", _path("/v1/uploads/{id}/complete", ident, {}), _encode(body),
                       (("Content-Type", "application/json"),))

    return st.one_of(mutated(_CREATE, CREATE_FIELDS).map(create),
                     st.builds(part, ids, upload_requests()),
                     st.builds(finish, ids, mutated(complete, ("part_ids", "md5"))),
                     ids.map(lambda ident: Request("POST", _path("/v1/uploads/{id}/cancel", ident, {}))))


def run_uploads(tally: Tally, examples: int, upload_id: str, part_ids: list[str]) -> Tally:
    """``examples`` generated Uploads API requests through one door, the same ones on every run."""

    @settings(max_examples=examples, derandomize=True, database=None, deadline=None, print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(upload_requests_for(upload_id, part_ids))
    def one(request: Request) -> None:
        tally.send(request)

    one()
    return tally
