"""Starting on PostgreSQL (``RESPONSES_BRIDGE_DATABASE_URL``): the start fails with one line naming the host when the
database is out of reach or refuses the credentials, never falling back to SQLite; replicas with separate data
directories on one database share every object."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import aiohttp

from responses_bridge.demo.procs import free_port
from tests.support import zygote
from tests.support.bridge import running_sidecar
from tests.support.postgres import PostgresServer
from tests.support.sdk import async_sdk


def serve(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return zygote.run([sys.executable, "-m", "responses_bridge", "serve", "--no-extproc", "--http-port",
                       str(free_port()), "--db", str(tmp_path / "never.db")], env={**os.environ, **env}, timeout=120)


def test_unreachable_database_fails_the_start_naming_the_host(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    result = serve({"RESPONSES_BRIDGE_DATABASE_URL": f"postgresql://bridge:s3cret-pw@127.0.0.1:{port}/shared"},
                   tmp_path)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("responses-bridge serve:")]
    assert len(lines) == 1, result.stderr
    assert f"127.0.0.1:{port}/shared" in lines[0] and "RESPONSES_BRIDGE_DATABASE_URL" in lines[0]
    assert "s3cret-pw" not in result.stderr + result.stdout
    assert not (tmp_path / "never.db").exists()  # no SQLite file instead


def test_wrong_password_fails_the_start(postgres_server: PostgresServer, tmp_path: Path) -> None:
    result = serve({"RESPONSES_BRIDGE_DATABASE_URL": postgres_server.url(password="wrong-pw-123")}, tmp_path)
    assert result.returncode == 1
    assert "password authentication failed" in result.stderr
    assert f"127.0.0.1:{postgres_server.port}" in result.stderr
    assert "wrong-pw-123" not in result.stderr + result.stdout
    assert not (tmp_path / "never.db").exists()


async def test_two_replicas_with_separate_data_directories_share_every_object(
        fake_upstream: str, postgres_url: str, tmp_path: Path) -> None:
    env = {"RESPONSES_BRIDGE_DATABASE_URL": postgres_url}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with running_sidecar(str(tmp_path / "a"), fake_upstream, env=env, extproc=False) as a, \
            running_sidecar(str(tmp_path / "b"), fake_upstream, env=env, extproc=False) as b:
        async with async_sdk(base_url=f"{a.http_url}/v1", api_key="k", max_retries=0) as on_a, \
                async_sdk(base_url=f"{b.http_url}/v1", api_key="k", max_retries=0) as on_b:
            conversation = await on_a.conversations.create(items=[{"role": "user", "content": "from A"}])
            first = await on_a.responses.create(model="fake-model", input="alpha", conversation=conversation.id,
                                                include=["reasoning.encrypted_content"])
            second = await on_b.responses.create(model="fake-model", input="beta", previous_response_id=first.id)
            assert second.previous_response_id == first.id
            assert (await on_a.responses.retrieve(second.id)).id == second.id
            await on_b.responses.create(model="fake-model", input="from B", conversation=conversation.id)
            items = await on_a.conversations.items.list(conversation.id, order="asc")
            texts = [part.text for item in items.data if item.type == "message" and item.role == "user"
                     for part in item.content]
            assert texts == ["from A", "alpha", "from B"]
            listed = await on_b.responses.input_items.list(first.id)
            assert [item.content[0].text for item in listed.data] == ["alpha"]
            listed_ids = []
            async with aiohttp.ClientSession() as http:
                for url in (a.http_url, b.http_url):
                    async with http.get(f"{url}/v1/responses") as page:
                        listed_ids.append([r["id"] for r in (await page.json())["data"]])
            assert listed_ids[0] == listed_ids[1]
            assert len(listed_ids[0]) == 3 and {first.id, second.id} <= set(listed_ids[0])
    assert not any(path.suffix == ".db" for path in tmp_path.rglob("*"))  # no SQLite file anywhere
