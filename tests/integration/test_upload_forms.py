"""Uploads that must not be kept, through both doors: a ``multipart/form-data`` body cut short before its closing
boundary (to ``/v1/files`` and to a container), and a container file whose path another file of the container makes
a directory of (``a`` beside ``a/b``). Each is an OpenAI-shaped 400, and nothing of it is stored."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_replicas_code.py",
    "tests/unit/test_tenancy_files_store.py",
    "tests/unit/test_containers_service.py",
    "tests/integration/test_agents_automations_replicas.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

BOUNDARY = "cutshortboundaryQ7x"
ERROR_KEYS = {"message", "type", "param", "code"}
HEADERS = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def part(disposition: str, body: bytes) -> bytes:
    return f"--{BOUNDARY}\r\nContent-Disposition: form-data; {disposition}\r\n\r\n".encode() + body + b"\r\n"


def whole(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


PURPOSE = part('name="purpose"', b"assistants")
FILE = part('name="file"; filename="cut.txt"', b"the whole file, and nothing but")
FORMS = {"file last": whole(PURPOSE, FILE), "file first": whole(FILE, PURPOSE)}
# where the body stops: inside the closing boundary, right after the last part, inside the last part's bytes, in
# its headers, or after a delimiter that opens a part which never comes
CUTS = [len(f"--{BOUNDARY}--\r\n") - cut for cut in (2, 4, 9)] + [len(f"--{BOUNDARY}--\r\n") + n for n in (0, 2, 5)]


def cut_forms() -> list[Any]:
    cases = [pytest.param(form[:-cut], id=f"{name}, {cut} bytes short") for name, form in FORMS.items()
             for cut in CUTS]
    stops = [whole(PURPOSE)[:-len(f"--{BOUNDARY}--\r\n")] + f"--{BOUNDARY}\r\n".encode(),
             whole(PURPOSE)[:-len(f"--{BOUNDARY}--\r\n")] + FILE[:60],
             whole(PURPOSE)[:-len(f"--{BOUNDARY}--\r\n")] + FILE.split(b"\r\n\r\n")[0] + b"\r\n\r\n"]
    return cases + [pytest.param(body, id=f"stops {n}") for n, body in enumerate(stops)]


async def answer(http: aiohttp.ClientSession, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    async with http.request(method, path, **kwargs) as response:
        return response.status, await response.json(content_type=None)


@pytest.fixture
async def container(http: aiohttp.ClientSession) -> str:
    status, made = await answer(http, "POST", "/v1/containers", json={"name": "uploads"})
    assert status == 200, made
    return str(made["id"])


async def test_whole_forms_are_stored(http: aiohttp.ClientSession, container: str) -> None:
    for form in FORMS.values():
        status, stored = await answer(http, "POST", "/v1/files", data=form, headers=HEADERS)
        assert (status, stored["bytes"]) == (200, 31), stored
        status, stored = await answer(http, "POST", f"/v1/containers/{container}/files", data=form, headers=HEADERS)
        assert (status, stored["bytes"], stored["path"]) == (200, 31, "/mnt/data/cut.txt"), stored


@pytest.mark.parametrize("body", cut_forms())
async def test_a_form_cut_short_is_refused_and_not_stored(http: aiohttp.ClientSession, container: str,
                                                         body: bytes) -> None:
    files_before = (await answer(http, "GET", "/v1/files"))[1]["data"]
    for path in ("/v1/files", f"/v1/containers/{container}/files"):
        status, refused = await answer(http, "POST", path, data=body, headers=HEADERS)
        assert status == 400 and set(refused["error"]) == ERROR_KEYS, (path, refused)
        assert refused["error"]["code"] == "invalid_multipart", (path, refused)
        assert "closing boundary" in refused["error"]["message"], (path, refused)
    assert (await answer(http, "GET", "/v1/files"))[1]["data"] == files_before
    assert (await answer(http, "GET", f"/v1/containers/{container}/files"))[1]["data"] == []


async def test_a_file_and_a_directory_of_one_name_are_refused(http: aiohttp.ClientSession, container: str) -> None:
    files = f"/v1/containers/{container}/files"

    async def upload(name: str) -> tuple[int, Any]:
        return await answer(http, "POST", files, headers=HEADERS,
                            data=whole(part(f'name="file"; filename="{name}"', b"bytes")))

    assert (await upload("a"))[0] == 200
    assert (await upload("x/y"))[0] == 200
    for name, taken in (("a/b", "/mnt/data/a"), ("x", "/mnt/data/x/y")):
        status, refused = await upload(name)
        assert status == 400 and set(refused["error"]) == ERROR_KEYS, refused
        assert (refused["error"]["code"], refused["error"]["param"]) == ("path_conflict", "file"), refused
        assert f"/mnt/data/{name}" in refused["error"]["message"] and taken in refused["error"]["message"]
    listed = (await answer(http, "GET", files))[1]["data"]
    assert sorted(file["path"] for file in listed) == ["/mnt/data/a", "/mnt/data/x/y"]
