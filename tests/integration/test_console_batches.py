"""The console's Batches page, asked as a hand-written client would (aiohttp, no browser), and the operator's
``responses-bridge batches list|cancel``: a real sidecar's HTTP door with keys (two tenants and an operator, made by
``responses-bridge keys create``), batches made through it with the openai SDK.

What it proves: a tenant's batches are listed with their status, counts and throughput; a batch's page shows its
facts and links its output and error files, which download as the API's files do (the same bytes); a batch that
failed validation lists its errors by line, at most 100 of them with the count of the rest (a page's bytes are
bounded whatever the batch); another tenant sees none of it (its list is empty, the batch and its files are 404s),
while an operator choosing the tenant does. The command lists every tenant's batches (or one tenant's, or one
status), and cancels a running batch by its id alone: no more of its lines start, those done are kept, it ends
``cancelled``."""

from __future__ import annotations

import asyncio
import io
import os
import re
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import openai
import orjson
import pytest

from tests.support.bridge import PYTHON, Sidecar, create_keys, keys_command, running_sidecar, sidecar_env
from tests.support.sdk import async_sdk

MODEL = "fake-model"
ALPHA, BRAVO = "alpha", "bravo"
BAD_LINES = 150


@dataclass
class Stack:
    sidecar: Sidecar
    db: str
    keys: dict[str, str]
    done: str = ""  # alpha's batch that completed, one of its lines refused by the endpoint
    refused: str = ""  # alpha's batch that failed validation, every line named

    @property
    def url(self) -> str:
        return self.sidecar.http_url

    def sdk(self, who: str) -> openai.AsyncOpenAI:
        return async_sdk(base_url=f"{self.url}/v1", api_key=self.keys[who], max_retries=0, timeout=60)


def jsonl(lines: list[dict]) -> io.BytesIO:
    return io.BytesIO(b"".join(orjson.dumps(line) + b"\n" for line in lines))


@pytest.fixture(scope="module")
async def stack(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    tmp = tmp_path_factory.mktemp("console-batches")
    db = str(tmp / "bridge.db")
    keys = create_keys(db, [ALPHA, BRAVO])
    made = keys_command(db, "create", "--operator")
    assert made.returncode == 0, made.stderr
    keys["op"] = made.stdout.strip()
    async with running_sidecar(str(tmp), fake_upstream, "--db", db,
                               env={"RESPONSES_BRIDGE_AUTH": "keys", "RESPONSES_BRIDGE_CONSOLE": "on",
                                    # a heartbeat a second: a cancel recorded by the command is seen soon
                                    "RESPONSES_BRIDGE_BACKGROUND_LEASE_SECONDS": "3",
                                    "RESPONSES_BRIDGE_BATCH_CONCURRENCY": "2"}) as sidecar:
        started = Stack(sidecar, db, keys)
        client = started.sdk(ALPHA)
        lines = [{"custom_id": f"ok-{at}", "method": "POST", "url": "/v1/responses",
                  "body": {"model": MODEL, "input": f"line {at}"}} for at in range(3)]
        lines.append({"custom_id": "streamed", "method": "POST", "url": "/v1/responses",
                      "body": {"model": MODEL, "input": "no", "stream": True}})  # that line's error
        uploaded = await client.files.create(file=("lines.jsonl", jsonl(lines)), purpose="batch")
        batch = await client.batches.create(input_file_id=uploaded.id, endpoint="/v1/responses",
                                            completion_window="24h", metadata={"job": "labelling"})
        started.done = batch.id
        bad = [{"custom_id": "same", "method": "POST", "url": "/v1/chat/completions", "body": {"model": MODEL}}
               for _ in range(BAD_LINES)]
        uploaded = await client.files.create(file=("bad.jsonl", jsonl(bad)), purpose="batch")
        started.refused = (await client.batches.create(input_file_id=uploaded.id, endpoint="/v1/responses",
                                                       completion_window="24h")).id
        for batch_id in (started.done, started.refused):
            for _ in range(600):
                if (await client.batches.retrieve(batch_id)).status in ("completed", "failed"):
                    break
                await asyncio.sleep(0.05)
        yield started


async def sign_in(stack: Stack, who: str) -> str:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session, session.post(
            f"{stack.url}/console/sign-in", data={"key": stack.keys[who]}, allow_redirects=False,
            headers={"Origin": stack.url}) as answer:
        assert answer.status == 303, await answer.text()
        return answer.cookies["rb_console"].value


async def get(stack: Stack, cookie: str, path: str) -> tuple[int, bytes, str]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session, session.get(
            stack.url + path, headers={"Cookie": f"rb_console={cookie}"}, allow_redirects=False) as answer:
        return answer.status, await answer.read(), answer.headers.get("Content-Disposition", "")


async def test_a_tenants_batches_are_listed_with_status_counts_and_throughput(stack: Stack) -> None:
    cookie = await sign_in(stack, ALPHA)
    status, body, _ = await get(stack, cookie, "/console/batches")
    html = body.decode()
    assert status == 200
    assert stack.done in html and stack.refused in html
    row = re.search(rf"{stack.done}.*?</tr>", html, re.S)
    assert row is not None
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(0), re.S)
    assert "completed" in cells[0] and cells[1] == "/v1/responses"
    assert cells[2:5] == ["3", "1", "4"]  # completed, failed, total
    assert re.fullmatch(r"[0-9.]+/s", cells[5])  # lines a second while it ran
    assert 'href="/console/batches"' in html  # the navigation names the page


async def test_a_batchs_page_links_its_files_which_download_as_the_api_sends_them(stack: Stack) -> None:
    cookie = await sign_in(stack, ALPHA)
    status, body, _ = await get(stack, cookie, f"/console/batches/{stack.done}")
    html = body.decode()
    assert status == 200 and "3 completed, 1 failed of 4" in html and "labelling" in html
    batch = await stack.sdk(ALPHA).batches.retrieve(stack.done)
    links = dict(re.findall(r'class="batch-file (\w+)" href="([^"]+)"', html))
    assert set(links) == {"input", "output", "errors"}
    for what, file_id in (("output", batch.output_file_id), ("errors", batch.error_file_id)):
        assert file_id is not None and file_id in links[what]
        status, content, disposition = await get(stack, cookie, links[what])
        assert status == 200 and disposition.startswith("attachment")
        assert content == (await stack.sdk(ALPHA).files.content(file_id)).content  # the same bytes
    errors = [orjson.loads(line) for line in (await get(stack, cookie, links["errors"]))[1].splitlines()]
    assert [line["custom_id"] for line in errors] == ["streamed"]


async def test_a_failed_validation_lists_its_errors_by_line_within_a_bound(stack: Stack) -> None:
    cookie = await sign_in(stack, ALPHA)
    status, body, _ = await get(stack, cookie, f"/console/batches/{stack.refused}")
    html = body.decode()
    assert status == 200 and "failed" in html
    section = html[html.index('id="errors"'):]
    shown = re.findall(r"<tr><td>(\d*)</td>", section)
    batch = await stack.sdk(ALPHA).batches.retrieve(stack.refused)
    assert batch.errors is not None and batch.errors.data is not None
    total = len(batch.errors.data)
    assert total > 100  # every line is named by the API (a wrong url and a repeated custom_id)
    assert len(shown) == 100 and f"{total - 100} more errors than shown" in section
    assert len(body) < 200_000  # a page of 100 errors, not of every one


async def test_another_tenant_sees_none_of_it_and_an_operator_choosing_the_tenant_does(stack: Stack) -> None:
    cookie = await sign_in(stack, BRAVO)
    status, body, _ = await get(stack, cookie, "/console/batches")
    assert status == 200 and stack.done not in body.decode() and "No batches." in body.decode()
    batch = await stack.sdk(ALPHA).batches.retrieve(stack.done)
    for path in (f"/console/batches/{stack.done}", f"/console/batches/{stack.done}/files/{batch.output_file_id}",
                 f"/console/batches/{stack.done}/files/{batch.input_file_id}"):
        assert (await get(stack, cookie, path))[0] == 404
    alpha = await sign_in(stack, ALPHA)  # a file that is not the batch's is not offered through it
    other = await stack.sdk(ALPHA).files.create(file=("x.jsonl", io.BytesIO(b"{}\n")), purpose="batch")
    assert (await get(stack, alpha, f"/console/batches/{stack.done}/files/{other.id}"))[0] == 404
    operator = await sign_in(stack, "op")
    status, body, _ = await get(stack, operator, f"/console/batches?tenant={ALPHA}")
    assert status == 200 and stack.done in body.decode()
    assert (await get(stack, operator, "/console/batches"))[1].decode().count("batch-link") == 0  # its own tenant's


def batches_command(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """``responses-bridge batches …`` on the sidecar's database (PostgreSQL when the run puts sidecars there)."""
    env = {**os.environ, "RESPONSES_BRIDGE_DB": "", **sidecar_env(stack.db)}
    return subprocess.run([PYTHON, "-m", "responses_bridge", "batches", *args, "--db", stack.db], capture_output=True,
                          text=True, timeout=120, check=False, env=env)


def listed(stack: Stack, *args: str) -> dict[str, list[str]]:
    done = batches_command(stack, "list", *args)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["ID", "TENANT", "STATUS", "ENDPOINT", "DONE", "FAILED", "CREATED"]
    return {line.split()[0]: line.split()[1:] for line in lines[1:]}


async def test_the_command_lists_every_tenants_batches_for_an_operator(stack: Stack) -> None:
    every = listed(stack)
    assert every[stack.done][:5] == [ALPHA, "completed", "/v1/responses", "4/4", "1"]
    assert every[stack.refused][:2] == [ALPHA, "failed"]
    assert listed(stack, "--tenant", BRAVO).keys().isdisjoint({stack.done, stack.refused})
    assert set(listed(stack, "--tenant", ALPHA, "--status", "failed")) == {stack.refused}
    assert stack.refused not in listed(stack, "--status", "completed")


async def test_the_command_cancels_a_running_batch_by_its_id(stack: Stack) -> None:
    client = stack.sdk(BRAVO)
    lines = [{"custom_id": f"slow-{at}", "method": "POST", "url": "/v1/responses",
              "body": {"model": MODEL, "input": "slow [header_delay=2000]"}} for at in range(20)]
    uploaded = await client.files.create(file=("slow.jsonl", jsonl(lines)), purpose="batch")
    batch = await client.batches.create(input_file_id=uploaded.id, endpoint="/v1/responses", completion_window="24h")
    for _ in range(600):  # its first line answered: running (2 at a time, 20 s in all)
        counts = (await client.batches.retrieve(batch.id)).request_counts
        if counts is not None and counts.completed:
            break
        await asyncio.sleep(0.05)
    done = batches_command(stack, "cancel", batch.id)
    assert done.returncode == 0, done.stderr
    assert f"cancelling batch {batch.id} of tenant '{BRAVO}'" in done.stderr
    for _ in range(1200):
        ended = await client.batches.retrieve(batch.id)
        if ended.status == "cancelled":
            break
        await asyncio.sleep(0.05)
    assert ended.status == "cancelled" and ended.request_counts is not None
    assert 1 <= ended.request_counts.completed < len(lines)  # what finished is kept; the rest never ran
    assert ended.output_file_id is not None
    again = batches_command(stack, "cancel", batch.id)
    assert again.returncode == 1 and "is cancelled: there is nothing to cancel" in again.stderr
    unknown = batches_command(stack, "cancel", "batch_nope")
    assert unknown.returncode == 1 and "no batch has the id 'batch_nope'" in unknown.stderr
