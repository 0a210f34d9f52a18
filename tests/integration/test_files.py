"""The Files API through both doors, with the openai SDK: create / list / retrieve / content / delete, a 200 MB
upload streamed with the sidecar's memory bounded, the size limit's 413, and hostile forms and filenames (raw
multipart, for what the SDK would never send)."""

from __future__ import annotations

import hashlib
import io
import os
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import openai
import pytest

from responses_bridge.demo.procs import free_port
from responses_bridge.envoy_config import BUFFER_LIMIT_BYTES, FILES_CLUSTER, render_bootstrap
from tests.support.bridge import Sidecar, running_sidecar
from tests.support.envoy import EnvoyProcess, start_envoy
from tests.support.memory import reset_peak, status_kb
from tests.support.sdk import async_sdk
from tests.support.sidecar_state import database_of, stored_files

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_replicas_retrieval.py",
    "tests/unit/test_tenancy_files_store.py",
    "tests/integration/test_agents_automations_replicas.py",
    "tests/unit/test_postgres_file_bytes.py",
    "tests/unit/test_file_service.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

MiB = 1 << 20
LIMIT = MiB  # the limited sidecar's RESPONSES_BRIDGE_MAX_FILE_BYTES
ERROR_KEYS = {"message", "type", "param", "code"}


class PatternStream(io.RawIOBase):
    """``size`` bytes of a repeated random block, generated as read: an upload of any size without holding it.
    ``seekable=False`` hides the length, so the client sends the form chunked (no Content-Length)."""

    BLOCK = random.Random(7).randbytes(MiB + 17)  # not a divisor of the sizes used: chunk edges move around

    def __init__(self, size: int, *, seekable: bool = True) -> None:
        self.size = size
        self.position = 0
        self._seekable = seekable

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._seekable

    def tell(self) -> int:
        if not self._seekable:
            raise io.UnsupportedOperation("not seekable")
        return self.position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if not self._seekable:
            raise io.UnsupportedOperation("not seekable")
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.position, os.SEEK_END: self.size}[whence]
        self.position = base + offset
        return self.position

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        start = self.position % len(self.BLOCK)
        count = min(len(buffer), self.size - self.position, len(self.BLOCK) - start)
        if count <= 0:
            return 0
        buffer[:count] = self.BLOCK[start:start + count]
        self.position += count
        return count

    def sha256(self) -> str:
        digest = hashlib.sha256()
        self.seek(0)
        while chunk := self.read(4 * MiB):
            digest.update(chunk)
        self.seek(0)
        return digest.hexdigest()



async def stored(sidecar: Sidecar) -> dict[str, bytes]:
    """The bytes the sidecar keeps, by name (tests/support/stored_files.py: on disk or in PostgreSQL)."""
    return await stored_files(database_of(sidecar.process.argv))


# --- the SDK, both doors -------------------------------------------------------------------------------------------


async def test_create_retrieve_content_list_delete(client: openai.AsyncOpenAI, sidecar: Sidecar) -> None:
    created = await client.files.create(file=("notes.md", b"# Notes\nhello\n", "text/markdown"),
                                        purpose="assistants",
                                        expires_after={"anchor": "created_at", "seconds": 3600})
    assert created.id.startswith("file-") and created.object == "file" and created.bytes == 14
    assert created.filename == "notes.md" and created.purpose == "assistants" and created.status == "processed"
    assert created.expires_at == created.created_at + 3600
    assert (await stored(sidecar))[created.id] == b"# Notes\nhello\n"

    assert await client.files.retrieve(created.id) == created
    content = await client.files.content(created.id)
    assert content.content == b"# Notes\nhello\n"
    assert content.response.headers["content-type"] == "application/octet-stream"
    listed = [file.id async for file in client.files.list(purpose="assistants")]
    assert created.id in listed

    deleted = await client.files.delete(created.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (created.id, True, "file")
    assert created.id not in await stored(sidecar)
    for call in (client.files.retrieve, client.files.content, client.files.delete):
        with pytest.raises(openai.NotFoundError) as raised:
            await call(created.id)
        assert raised.value.body["param"] == "file_id"  # type: ignore[index]
    assert created.id not in [file.id async for file in client.files.list(purpose="assistants")]


async def test_pagination_in_both_orders(client: openai.AsyncOpenAI) -> None:
    ids = [(await client.files.create(file=(f"p{index}.txt", b"page"), purpose="vision")).id for index in range(5)]
    try:
        page = await client.files.list(purpose="vision", order="asc", after=ids[0], limit=2)
        assert [file.id for file in page.data] == ids[1:3] and page.has_more
        assert [file.id async for file in client.files.list(purpose="vision", order="asc", after=ids[0],
                                                             limit=2)] == ids[1:]  # the SDK follows the cursor
        newest = await client.files.list(purpose="vision", limit=3)
        assert [file.id for file in newest.data] == ids[:1:-1] and newest.has_more
        older = [file.id async for file in client.files.list(purpose="vision", after=ids[4], limit=2)]
        assert older[:4] == ids[3::-1]
        assert not {file.purpose async for file in client.files.list(purpose="vision")} - {"vision"}
        for query, param in (({"limit": 0}, "limit"), ({"limit": 10_001}, "limit"), ({"order": "up"}, "order"),
                             ({"after": "file-nope"}, "after")):
            with pytest.raises(openai.BadRequestError) as raised:
                await client.files.list(**query)  # type: ignore[arg-type]
            assert raised.value.body["param"] == param  # type: ignore[index]
    finally:
        for file_id in ids:
            await client.files.delete(file_id)


@pytest.mark.parametrize(("arguments", "param"), [
    ({"purpose": "fine_tune"}, "purpose"),
    ({"purpose": "assistants_output"}, "purpose"),
    ({"purpose": "assistants", "expires_after": {"anchor": "created_at", "seconds": 60}}, "expires_after.seconds"),
    ({"purpose": "assistants", "expires_after": {"anchor": "last_active_at", "seconds": 3600}},
     "expires_after.anchor"),
])
async def test_bad_arguments_are_400s(client: openai.AsyncOpenAI, arguments: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await client.files.create(file=("a.txt", b"x"), **arguments)
    assert raised.value.body["param"] == param  # type: ignore[index]
    assert raised.value.body["code"] == "invalid_value"  # type: ignore[index]


async def test_a_refusal_before_a_large_body_still_reaches_the_client(client: openai.AsyncOpenAI) -> None:
    """The purpose goes before the file, so the door refuses it before reading the file: the answer waits until
    the client has sent its body, or it would see a reset instead of the 400."""
    for _ in range(3):
        with pytest.raises(openai.BadRequestError) as raised:
            await client.files.create(file=("big.bin", PatternStream(30 * MiB)), purpose="nope")  # type: ignore[arg-type]
        assert raised.value.body["param"] == "purpose"  # type: ignore[index]


async def test_a_200_mb_upload_streams_with_the_sidecars_memory_bounded(client: openai.AsyncOpenAI, door: str,
                                                                      sidecar: Sidecar) -> None:
    """The upload is larger than any buffer on the way (through Envoy: its per-connection buffer limit, which a
    buffered body would hit with a 413), and the sidecar's peak resident memory while receiving it grows by a
    small fraction of its size: it went to disk in chunks."""
    size = 200 * MiB
    assert size > 3 * BUFFER_LIMIT_BYTES
    stream = PatternStream(size)
    expected = stream.sha256()
    pid = sidecar.process.pid
    before_kb = reset_peak(pid)  # the peak RSS (VmHWM) starts again from here
    created = await client.files.create(file=("big.bin", stream), purpose="user_data")
    growth_mb = (status_kb(pid, "VmHWM") - before_kb) / 1024
    try:
        assert created.bytes == size
        assert growth_mb < 48, f"the sidecar's peak RSS grew by {growth_mb:.0f} MB for a 200 MB upload ({door})"
        digest = hashlib.sha256()
        async with client.files.with_streaming_response.content(created.id) as response:
            async for chunk in response.iter_bytes(MiB):
                digest.update(chunk)
        assert digest.hexdigest() == expected
    finally:
        await client.files.delete(created.id)


@pytest.fixture(scope="module")
async def own_envoy(sidecar: Sidecar) -> AsyncIterator[tuple[EnvoyProcess, str]]:
    """An Envoy of this module's own in front of the suite's shared sidecar: its process is needed, not only its URL."""
    port = free_port()
    envoy = await start_envoy(render_bootstrap(listen_port=port, extproc_port=sidecar.extproc_port,
                                               http_port=int(sidecar.http_url.rsplit(":", 1)[1]),
                                               upstream=sidecar.upstream_url, admin_port=0))
    try:
        yield envoy, f"http://127.0.0.1:{port}"
    finally:
        envoy.stop()


async def test_envoy_holds_little_of_an_upload(own_envoy: tuple[EnvoyProcess, str]) -> None:
    """Envoy's peak RSS while passing a 200 MB upload grows by far less than the upload: nothing buffers the whole
    body (no ext_proc, no buffer filter on the route). The files cluster's 1 MiB buffers push back as soon as the
    door falls behind; the listener's own read buffer (65 MiB, sized for whole Responses bodies) can still fill
    while a loaded machine slows the door, so the bound is half the upload, not the 10 MB a quiet run shows."""
    envoy, url = own_envoy
    size = 200 * MiB
    pid = envoy.process.pid
    async with async_sdk(base_url=f"{url}/v1", api_key="k", max_retries=0, timeout=120) as sdk:
        await sdk.files.delete((await sdk.files.create(file=("warm.bin", b"w"), purpose="user_data")).id)
        before_kb = reset_peak(pid)  # the peak RSS (VmHWM) starts again from here
        created = await sdk.files.create(file=("big.bin", PatternStream(size)), purpose="user_data")
        growth_mb = (status_kb(pid, "VmHWM") - before_kb) / 1024
        await sdk.files.delete(created.id)
    assert created.bytes == size
    assert growth_mb < size / MiB / 2, f"Envoy's peak RSS grew by {growth_mb:.0f} MB for a 200 MB upload"


async def test_chunked_upload_without_a_length(client: openai.AsyncOpenAI) -> None:
    stream = PatternStream(3 * MiB + 5, seekable=False)
    created = await client.files.create(file=("chunked.bin", stream), purpose="user_data")
    try:
        assert created.bytes == 3 * MiB + 5
        assert hashlib.sha256((await client.files.content(created.id)).content).hexdigest() == \
            PatternStream(3 * MiB + 5).sha256()
    finally:
        await client.files.delete(created.id)


# --- the size limit: a sidecar (and its Envoy) with a 1 MiB limit --------------------------------------------------


@dataclass
class Limited:
    sidecar: Sidecar
    envoy: EnvoyProcess
    envoy_url: str


@pytest.fixture(scope="module")
async def limited(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Limited]:
    async with running_sidecar(str(tmp_path_factory.mktemp("limited")), fake_upstream,
                               env={"RESPONSES_BRIDGE_MAX_FILE_BYTES": str(LIMIT)}) as started:
        port = free_port()
        envoy = await start_envoy(render_bootstrap(listen_port=port, extproc_port=started.extproc_port,
                                                   http_port=int(started.http_url.rsplit(":", 1)[1]),
                                                   upstream=started.upstream_url, admin_port=0))
        try:
            yield Limited(started, envoy, f"http://127.0.0.1:{port}")
        finally:
            envoy.stop()


@pytest.fixture
async def limited_client(limited: Limited, door: str) -> AsyncIterator[openai.AsyncOpenAI]:
    base = limited.envoy_url if door == "envoy" else limited.sidecar.http_url
    async with async_sdk(base_url=f"{base}/v1", api_key="sk-client", max_retries=0, timeout=60) as sdk:
        yield sdk


@pytest.mark.parametrize("seekable", [True, False], ids=["content-length", "chunked"])
async def test_over_the_limit_is_a_413_and_stores_nothing(limited_client: openai.AsyncOpenAI, limited: Limited,
                                                          seekable: bool) -> None:
    exact = await limited_client.files.create(file=("exact.bin", PatternStream(LIMIT, seekable=seekable)),
                                              purpose="assistants")
    assert exact.bytes == LIMIT
    for size in (LIMIT + 1, 40 * MiB):
        with pytest.raises(openai.APIStatusError) as raised:
            await limited_client.files.create(file=("big.bin", PatternStream(size, seekable=seekable)),
                                              purpose="assistants")
        assert raised.value.status_code == 413
        body = raised.value.body
        assert isinstance(body, dict) and set(body) == ERROR_KEYS and body["code"] == "file_too_large"
        assert "1 MiB" in body["message"] and body["param"] == "file"
    assert sorted(await stored(limited.sidecar)) == [exact.id]  # no partial upload left behind
    await limited_client.files.delete(exact.id)


async def test_uploads_through_envoy_never_reach_the_processor(limited: Limited) -> None:
    async with async_sdk(base_url=f"{limited.envoy_url}/v1", api_key="k", max_retries=0) as sdk:
        created = await sdk.files.create(file=("a.txt", b"through envoy"), purpose="assistants")
        assert (await sdk.files.content(created.id)).content == b"through envoy"
        await sdk.files.delete(created.id)
    stats = await limited.envoy.stats("http.responses_bridge.ext_proc.")
    assert int(stats.get("http.responses_bridge.ext_proc.streams_started", "0")) == 0, stats
    routed = await limited.envoy.stats(f"cluster.{FILES_CLUSTER}.upstream_rq_2xx")
    assert int(routed[f"cluster.{FILES_CLUSTER}.upstream_rq_2xx"]) >= 3


# --- hostile forms, raw ------------------------------------------------------------------------------------------

BOUNDARY = "hostileboundary7MA4YWxkTrZu0gW"


def form(*parts: tuple[bytes, bytes]) -> bytes:
    """A multipart/form-data body from (Content-Disposition parameters, body) pairs, bytes as given."""
    out = b""
    for disposition, body in parts:
        out += f"--{BOUNDARY}\r\n".encode() + b"Content-Disposition: form-data; " + disposition + b"\r\n\r\n"
        out += body + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


PURPOSE = (b'name="purpose"', b"assistants")


def file_part(filename: bytes, body: bytes = b"data") -> tuple[bytes, bytes]:
    return b'name="file"; filename="' + filename + b'"', body


async def post_form(http: aiohttp.ClientSession, body: bytes, content_type: str | None = None,
                    headers: dict[str, str] | None = None) -> tuple[int, dict]:
    sent = {"Content-Type": content_type or f"multipart/form-data; boundary={BOUNDARY}", **(headers or {})}
    async with http.post("/v1/files", data=body, headers=sent) as answer:
        payload = await answer.json(content_type=None)
        return answer.status, payload


async def test_hostile_filenames_never_reach_a_path(http: aiohttp.ClientSession, sidecar: Sidecar) -> None:
    directory = Path(database_of(sidecar.process.argv)).resolve().parent / "files"  # on disk, with SQLite
    # (a backslash in a quoted filename escapes the next character: a Windows path is sent as filename*)
    for disposition, kept in ((b'name="file"; filename="../../x"', "x"),
                              (b'name="file"; filename="/etc/passwd"', "passwd"),
                              (b"name=\"file\"; filename*=UTF-8''..%5C..%5Cwin.ini", "win.ini"),
                              (b"name=\"file\"; filename*=UTF-8''..%2F..%2Fy", "y"),
                              ('name="file"; filename="r\u00e9sum\u00e9.txt"'.encode(), "r\u00e9sum\u00e9.txt")):
        status, payload = await post_form(http, form(PURPOSE, (disposition, b"data")))
        assert status == 200, payload
        assert payload["filename"] == kept and (await stored(sidecar))[payload["id"]] == b"data"
        async with http.delete(f"/v1/files/{payload['id']}") as answer:
            assert answer.status == 200
    assert not (directory.parent / "x").exists() and not (directory.parent.parent / "x").exists()
    assert not (directory.parent / "y").exists() and not (directory.parent.parent / "y").exists()

    for filename in (b"a\x00b.txt", b"..", b"", b"x" * 5000, b"tab\there", b"dir/"):
        status, payload = await post_form(http, form(PURPOSE, file_part(filename)))
        assert status == 400, (filename[:20], payload)
        assert set(payload["error"]) == ERROR_KEYS
        # (a NUL is refused by the part header parser already: the form is unreadable, not its filename)
        assert (payload["error"]["param"], payload["error"]["code"]) in (("file", "invalid_filename"),
                                                                         (None, "invalid_multipart")), payload


@pytest.mark.parametrize(("body", "content_type", "status", "param"), [
    (form(PURPOSE), None, 400, "file"),
    (form(file_part(b"a.txt")), None, 400, "purpose"),
    (form((b'name="purpose"', b"nope"), file_part(b"a.txt")), None, 400, "purpose"),
    (form(PURPOSE, (b'name="file"', b"a plain field, no filename")), None, 400, "file"),
    (form(PURPOSE, file_part(b"a.txt"), file_part(b"b.txt")), None, 400, "file"),
    (form(PURPOSE, file_part(b"a.txt"), (b'name="expires_after"', b"[1]")), None, 400, "expires_after"),
    (form(PURPOSE, file_part(b"a.txt"), (b'name="expires_after[seconds]"', b"3600")), None, 400,
     "expires_after.anchor"),
    (form(PURPOSE, file_part(b"a.txt"), (b'name="expires_after"', b'{"anchor": "created_at", "seconds": "x"}')),
     None, 400, "expires_after.seconds"),
    (form(PURPOSE, file_part(b"a.txt"), (b'name="purpose"', b"\xff\xfe")), None, 400, "purpose"),
    (form(PURPOSE, file_part(b"a.txt"), (b'name="junk"', b"j" * 70_000)), None, 400, None),
    (b'{"purpose": "assistants"}', "application/json", 400, None),
    (form(PURPOSE, file_part(b"a.txt")), "multipart/form-data", 400, None),  # no boundary
    (form(PURPOSE, file_part(b"a.txt"))[:-40], None, 400, None),  # cut before its closing boundary
    (b"--" + BOUNDARY.encode() + b"\r\nno headers end here", None, 400, None),
    (b"complete garbage", None, 400, None),
])
async def test_malformed_forms_are_openai_shaped_400s(http: aiohttp.ClientSession, sidecar: Sidecar, body: bytes,
                                                      content_type: str | None, status: int,
                                                      param: str | None) -> None:
    before = set(await stored(sidecar))
    got, payload = await post_form(http, body, content_type)
    assert got == status, payload
    assert set(payload["error"]) == ERROR_KEYS and payload["error"]["param"] == param, payload
    assert set(await stored(sidecar)) == before  # nothing stored, no temporary file left


async def test_encoded_parts_and_bodies_are_refused(http: aiohttp.ClientSession) -> None:
    encoded_part = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n"
                    f"Content-Transfer-Encoding: base64\r\n\r\nZGF0YQ==\r\n--{BOUNDARY}--\r\n").encode()
    status, payload = await post_form(http, form(PURPOSE)[:-len(BOUNDARY) - 6] + encoded_part)
    assert status == 400 and payload["error"]["code"] == "unsupported_content_encoding", payload
    status, payload = await post_form(http, form(PURPOSE, file_part(b"a.txt")), headers={"Content-Encoding": "gzip"})
    assert status == 415 and set(payload["error"]) == ERROR_KEYS


async def test_unknown_ids_and_paths_are_404s(http: aiohttp.ClientSession) -> None:
    for path in ("/v1/files/file-" + "0" * 32, "/v1/files/..%2F..%2Fetc%2Fpasswd", "/v1/files/%2e%2e",
                 "/v1/files/file-" + "0" * 32 + "/content", "/v1/files/..%2Ffiles.db/content"):
        async with http.get(path) as answer:
            payload = await answer.json(content_type=None)
            assert answer.status in (400, 404) and set(payload["error"]) == ERROR_KEYS, (path, payload)


async def test_files_survive_a_restart(fake_upstream: str, tmp_path: Path) -> None:
    db = str(tmp_path / "restart.db")
    async with running_sidecar(str(tmp_path), fake_upstream, "--db", db, extproc=False) as first:
        async with async_sdk(base_url=f"{first.http_url}/v1", api_key="k", max_retries=0) as sdk:
            created = await sdk.files.create(file=("kept.txt", b"across restarts"), purpose="user_data")
    async with running_sidecar(str(tmp_path), fake_upstream, "--db", db, extproc=False) as second:
        async with async_sdk(base_url=f"{second.http_url}/v1", api_key="k", max_retries=0) as sdk:
            assert await sdk.files.retrieve(created.id) == created
            assert (await sdk.files.content(created.id)).content == b"across restarts"
            assert [file.id async for file in sdk.files.list(purpose="user_data")] == [created.id]
    assert sorted(await stored_files(db)) == [created.id]
