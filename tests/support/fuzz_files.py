"""Generated requests for the Files API routes, judged like every other route (tests/support/fuzz.py's ``Tally``:
never a 5xx, 4xx in the OpenAI shape, always an answer).

Uploads are ``multipart/form-data`` bodies built byte by byte, so they can be wrong in ways no client library
would produce: part headers with NULs, quotes and line breaks, odd names and filenames, fields in any order or
repeated, encoded parts, preambles, bodies cut short, boundaries that do not match the header's, other content
types. The read routes get hostile ids and query strings.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .fuzz import HUGE_NUMBERS, ODD_SHORT, Request, Tally, _path

BOUNDARY = "fuzzboundaryQ3v9x"
PURPOSES = ["assistants", "batch", "fine-tune", "vision", "user_data", "evals"]

_NAMES = st.one_of(st.sampled_from(["file", "purpose", "expires_after", "expires_after[anchor]",
                                    "expires_after[seconds]", "file", "purpose"]),
                   ODD_SHORT.map(lambda text: text[:200]), st.text(max_size=10))
_FILENAMES = st.one_of(st.none(), st.sampled_from(["a.txt", "../../x", "..", "", "a\x00b", "a\"b", "a\r\nX: y",
                                                   "C:\\x\\y.pdf", "x" * 5000, "\ud800.txt"]),
                       ODD_SHORT.map(lambda text: text[:300]), st.text(max_size=20))
_VALUES = st.one_of(st.sampled_from(PURPOSES).map(str.encode), st.sampled_from([b"created_at", b"3600", b"86400"]),
                    HUGE_NUMBERS.map(lambda number: str(number).encode()),
                    st.sampled_from([b'{"anchor": "created_at", "seconds": 3600}', b'{"anchor": 1}', b"[]", b"\xff",
                                     b"null"]),
                    st.binary(max_size=64), ODD_SHORT.map(lambda text: text.encode("utf-8", "surrogatepass")[:2000]))
_EXTRA_HEADERS = st.lists(st.sampled_from([b"Content-Type: text/plain", b"Content-Transfer-Encoding: base64",
                                           b"Content-Encoding: gzip", b"Content-Type: multipart/mixed; boundary=x",
                                           b"Content-Length: 3", b"X-Nul: a\x00b", b"no colon here"]), max_size=2)


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


@st.composite
def _part(draw: st.DrawFn) -> bytes:
    name = draw(_NAMES)
    filename = draw(_FILENAMES)
    disposition = b'Content-Disposition: form-data; name="' + _encode(name) + b'"'
    if filename is not None:
        disposition += b'; filename="' + _encode(filename) + b'"'
    headers = [disposition, *draw(_EXTRA_HEADERS)]
    body = draw(_VALUES) if filename is None else draw(st.binary(max_size=300))
    return b"\r\n".join(headers) + b"\r\n\r\n" + body


@st.composite
def upload_requests(draw: st.DrawFn) -> Request:
    """A create: mostly a plausible form (a purpose and a file), damaged one way or another."""
    parts = draw(st.lists(_part(), max_size=4))
    if draw(st.booleans()):
        purpose = _encode(draw(st.sampled_from(PURPOSES)))
        content = draw(st.binary(max_size=200))
        parts = [b'Content-Disposition: form-data; name="purpose"\r\n\r\n' + purpose, *parts,
                 b'Content-Disposition: form-data; name="file"; filename="f.txt"\r\n\r\n' + content]
    boundary = draw(st.sampled_from([BOUNDARY] * 6 + ["other", ""]))
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    body += b"--" + boundary.encode() + b"--\r\n"
    how = draw(st.sampled_from(["keep", "keep", "cut", "preamble", "garbage"]))
    if how == "cut" and body:
        body = body[:draw(st.integers(0, len(body) - 1))]
    elif how == "preamble":
        body = draw(st.binary(max_size=40)) + b"\r\n" + body
    elif how == "garbage":
        body = draw(st.binary(max_size=200))
    content_type = draw(st.sampled_from([*[f"multipart/form-data; boundary={BOUNDARY}"] * 8,
                                         f'multipart/form-data; boundary="{BOUNDARY}"', "multipart/form-data",
                                         "multipart/mixed; boundary=" + BOUNDARY, "application/json",
                                         "multipart/form-data; boundary=" + "b" * 300, "text/plain", ""]))
    headers = (("Content-Type", content_type),) if content_type else ()
    return Request("POST", "/v1/files", body, headers)


_IDS = st.one_of(st.sampled_from(["file-" + "0" * 32, "file-missing", "..", "../files.db", "file-", ""]),
                 st.text(max_size=12), ODD_SHORT)
_QUERY = st.dictionaries(st.sampled_from(["limit", "order", "after", "purpose"]),
                         st.one_of(st.text(max_size=10), st.integers(-5, 20_000).map(str), HUGE_NUMBERS.map(str),
                                   st.sampled_from([*PURPOSES, "asc", "desc", "\u00b2"]), ODD_SHORT), max_size=3)


def read_requests() -> st.SearchStrategy[Request]:
    routes = ["GET /v1/files", "GET /v1/files/{id}", "DELETE /v1/files/{id}", "GET /v1/files/{id}/content"]

    def one(route: str) -> st.SearchStrategy[Request]:
        method, template = route.split(" ", 1)
        return st.builds(lambda ident, query: Request(method, _path(template, ident, query)), _IDS, _QUERY)

    return st.one_of([one(route) for route in routes])


def file_requests() -> st.SearchStrategy[Request]:
    return st.one_of(upload_requests(), upload_requests(), read_requests())


def run_files(tally: Tally, examples: int) -> Tally:
    """``examples`` generated Files API requests through one door, the same ones on every run."""

    @settings(max_examples=examples, derandomize=True, database=None, deadline=None, print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(file_requests())
    def one(request: Request) -> None:
        tally.send(request)

    one()
    return tally
