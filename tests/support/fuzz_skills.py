"""Generated requests for every Skills API route, judged like every other route (tests/support/fuzz.py's ``Tally``:
never a 5xx, 4xx in the OpenAI shape, always an answer).

Uploads (``POST /v1/skills``, ``POST /v1/skills/{id}/versions``) are ``multipart/form-data`` bodies built byte by
byte: plausible skills (a zip, or a directory's parts) damaged one way or another, hostile zips (bombs, links,
``../`` names, bad manifests, not zips at all), part headers and filenames no client library would send, bodies
cut short. The other routes get a real skill's id, its versions, and hostile ids, versions, bodies and queries.
"""

from __future__ import annotations

import io
import stat
import zipfile
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .fuzz import HUGE_NUMBERS, ODD_SHORT, Request, Tally, _path, _quote

BOUNDARY = "skillsboundaryQ3v9x"
MANIFEST = b"---\nname: fuzzed\ndescription: A fuzzed skill.\n---\nBody.\n"


def _zip(entries: list[tuple[str, bytes, int | None]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if mode is not None:
                info.create_system = 3
                info.external_attr = mode << 16
            archive.writestr(info, data)
    return out.getvalue()


ZIPS = [
    _zip([("SKILL.md", MANIFEST, None), ("run.py", b"print(1)\n", stat.S_IFREG | 0o755)]),
    _zip([("fuzzed/SKILL.md", MANIFEST, None), ("fuzzed/a/b.txt", b"x", None)]),
    _zip([("SKILL.md", MANIFEST, None), ("zeros", b"\0" * (3 << 20), None)]),  # a bomb by ratio
    _zip([("SKILL.md", MANIFEST, None), ("../escape", b"x", None)]),
    _zip([("SKILL.md", MANIFEST, None), ("/abs", b"x", None)]),
    _zip([("SKILL.md", MANIFEST, None), ("link", b"/etc/passwd", stat.S_IFLNK | 0o777)]),
    _zip([("SKILL.md", b"no front matter", None)]),
    _zip([("SKILL.md", b"---\nname: [\n---\n", None)]),
    _zip([("SKILL.md", b'---\nname: x\ndescription: "\\ud800 \\x00"\n---\n', None)]),  # YAML escapes
    _zip([("README", b"no manifest", None)]),
    _zip([("SKILL.md", MANIFEST, None), *((f"{n}", b"", None) for n in range(1200))]),
    b"PK\x03\x04 broken",
    b"",
]
_FIELDS = st.sampled_from(["files", "files[]", "files[0]", "files[x]", "default", "file", "", "name"])
_FILENAMES = st.one_of(st.none(), st.sampled_from(["skill.zip", "SKILL.md", "fuzzed/SKILL.md", "fuzzed/run.py",
                                                   "../x", "/etc/passwd", "a\\b", "a\x00b", "a\"b", "a\r\nX: y",
                                                   "x" * 3000, "\ud800.md", ""]),
                       ODD_SHORT.map(lambda text: text[:300]))
_TYPES = st.sampled_from([None, "application/zip", "application/octet-stream", "text/markdown", "inode/symlink",
                          "inode/directory", "multipart/mixed; boundary=x", "\x00"])
_DATA = st.one_of(st.sampled_from(ZIPS), st.sampled_from([MANIFEST, b"true", b"false", b"maybe", b"\xff"]),
                  st.binary(max_size=200))


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


@st.composite
def _part(draw: st.DrawFn) -> bytes:
    disposition = b'Content-Disposition: form-data; name="' + _encode(draw(_FIELDS)) + b'"'
    filename = draw(_FILENAMES)
    if filename is not None:
        disposition += b'; filename="' + _encode(filename) + b'"'
    headers = [disposition]
    kind = draw(_TYPES)
    if kind is not None:
        headers.append(b"Content-Type: " + _encode(kind))
    return b"\r\n".join(headers) + b"\r\n\r\n" + draw(_DATA)


def _file_part(filename: str, data: bytes, kind: str = "application/octet-stream") -> bytes:
    return (b'Content-Disposition: form-data; name="files[]"; filename="' + filename.encode() + b'"\r\n'
            b"Content-Type: " + kind.encode() + b"\r\n\r\n" + data)


@st.composite
def upload_requests(draw: st.DrawFn, path: str) -> Request:
    """A form: mostly a plausible skill (one zip, or a directory's parts), with generated parts around it,
    damaged one way or another."""
    parts = draw(st.lists(_part(), max_size=3))
    plausible = draw(st.sampled_from(["zip", "directory", "none"]))
    if plausible == "zip":
        parts.insert(draw(st.integers(0, len(parts))), _file_part("skill.zip", draw(st.sampled_from(ZIPS)),
                                                                  "application/zip"))
    elif plausible == "directory":
        parts += [_file_part("fuzzed/SKILL.md", MANIFEST), _file_part(draw(st.sampled_from(
            ["fuzzed/run.py", "fuzzed/../x", "fuzzed/SKILL.md", "other/x"])), b"print(1)\n",
            draw(st.sampled_from(["text/x-python", "inode/symlink"])))]
    boundary = draw(st.sampled_from([BOUNDARY] * 6 + ["other", ""]))
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    body += b"--" + boundary.encode() + b"--\r\n"
    how = draw(st.sampled_from(["keep", "keep", "keep", "cut", "preamble", "garbage"]))
    if how == "cut" and body:
        body = body[:draw(st.integers(0, len(body) - 1))]
    elif how == "preamble":
        body = draw(st.binary(max_size=40)) + b"\r\n" + body
    elif how == "garbage":
        body = draw(st.binary(max_size=200))
    content_type = draw(st.sampled_from([*[f"multipart/form-data; boundary={BOUNDARY}"] * 8,
                                         "multipart/form-data", "application/json", "text/plain", ""]))
    headers = (("Content-Type", content_type),) if content_type else ()
    return Request("POST", path, body, headers)


def _ids(real: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(real) if real else st.nothing(),
                     st.sampled_from(["skill_" + "0" * 32, "skill_missing", "..", "", "cntr_x", "file-x"]),
                     st.text(max_size=12), ODD_SHORT)


_VERSIONS = st.one_of(st.sampled_from(["1", "2", "3", "latest", "0", "-1", "01", "1.5", "99999999999999999999",
                                       "skillver_x"]), st.text(max_size=6), HUGE_NUMBERS.map(str), ODD_SHORT)
_QUERY = st.dictionaries(st.sampled_from(["limit", "order", "after", "before"]),
                         st.one_of(st.text(max_size=10), st.integers(-5, 20_000).map(str), HUGE_NUMBERS.map(str),
                                   st.sampled_from(["asc", "desc", "1", "skill_missing"]), ODD_SHORT), max_size=3)
_UPDATES = st.one_of(
    st.fixed_dictionaries({"default_version": st.one_of(_VERSIONS, st.integers(-3, 5), HUGE_NUMBERS,
                                                        st.none(), st.booleans(), st.lists(st.integers()))}),
    st.dictionaries(st.sampled_from(["default_version", "name", "x"]), st.one_of(st.text(max_size=5),
                                                                                  st.integers()), max_size=3),
    st.sampled_from([[], "x", None, 3]))


def _json(value: object) -> bytes:
    import json

    return json.dumps(value).encode()


def route_requests(route: str, skill_ids: list[str]) -> st.SearchStrategy[Request]:
    """Requests for one route (``METHOD /v1/skills…`` with ``{id}`` and ``{version}``)."""
    method, template = route.split(" ", 1)
    ids = _ids(skill_ids)

    def path(ident: str, version: str, query: dict[str, str]) -> str:
        built = _path(template.replace("{version}", "@@v@@"), ident, query)
        return built.replace("@@v@@", _quote(version))

    if method == "POST" and template.endswith(("/skills", "/versions")):
        return st.builds(path, ids, _VERSIONS, st.just({})).flatmap(
            lambda where: upload_requests(where))  # type: ignore[call-arg]
    if method == "POST":
        return st.builds(lambda where, body, raw: Request(method, where, raw if raw is not None else _json(body),
                                                          (("Content-Type", "application/json"),)),
                         st.builds(path, ids, _VERSIONS, st.just({})), _UPDATES,
                         st.one_of(st.none(), st.none(), st.binary(max_size=30)))
    return st.builds(lambda where: Request(method, where), st.builds(path, ids, _VERSIONS, _QUERY))


ROUTES = ["POST /v1/skills", "GET /v1/skills", "GET /v1/skills/{id}", "POST /v1/skills/{id}",
          "DELETE /v1/skills/{id}", "GET /v1/skills/{id}/content", "POST /v1/skills/{id}/versions",
          "GET /v1/skills/{id}/versions", "GET /v1/skills/{id}/versions/{version}",
          "DELETE /v1/skills/{id}/versions/{version}", "GET /v1/skills/{id}/versions/{version}/content"]


def fresh_skills(base_url: str, count: int = 3) -> list[str]:
    """Skills with three versions each, made with the SDK, for the generated requests to reach."""
    from .sdk import sync_sdk

    data = _zip([("SKILL.md", b"---\nname: fuzz-target\ndescription: What the fuzzer aims at.\n---\n", None)])
    made: list[str] = []
    with sync_sdk(base_url=f"{base_url}/v1", api_key="sk-client", max_retries=0) as client:
        for _ in range(count):
            skill = client.skills.create(files=("skill.zip", data, "application/zip"))
            for _ in range(2):
                client.skills.versions.create(skill.id, files=("skill.zip", data, "application/zip"))
            made.append(skill.id)
    return made


def run_all_skills(tally: Tally, examples: int) -> Tally:
    """``examples`` generated requests for each Skills route, on fresh skills (``scripts/fuzz``)."""
    for route in ROUTES:
        ids = fresh_skills(tally.base_url)
        run_skills(tally, route, examples, lambda ids=ids: ids)  # type: ignore[misc]
    return tally


def run_skills(tally: Tally, route: str, examples: int, skill_ids: Callable[[], list[str]]) -> Tally:
    """``examples`` generated requests for ``route`` through one door, the same ones on every run."""

    @settings(max_examples=examples, derandomize=True, database=None, deadline=None, print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(route_requests(route, skill_ids()))
    def one(request: Request) -> None:
        tally.send(request)

    one()
    return tally
