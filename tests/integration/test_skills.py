"""Skills from outside, with the real ``openai`` SDK unmodified and raw HTTP, through the HTTP door and a real
Envoy: ``client.skills`` (a zip or a directory upload, list, get, update, versions, content, delete) answers in the
SDK's shapes; hostile skills (a zip bomb, ``../`` paths, 10,000 files, links, a missing SKILL.md) are 400s naming
``files``; another tenant's skill is exactly a missing one; skills' bytes count against the tenant's
``max_stored_bytes``; and a container made with skills runs the code interpreter with each laid out read-only at
``/mnt/skills/<name>/`` (readable, its script runnable, not writable), named in the tool's description, and
nothing of it left on the host afterwards."""

from __future__ import annotations

import base64
import gzip
import io
import os
import shutil
import stat
import tempfile
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from openai.types import DeletedSkill, Skill
from openai.types.skills import DeletedSkillVersion, SkillVersion

from responses_bridge.envoy_config import render_bootstrap
from responses_bridge.sandbox.doctor import check_bubblewrap
from tests.support.bridge import Sidecar, UpstreamLog, running_sidecar
from tests.support.envoy import EnvoyProcess, free_port, have_envoy, start_envoy
from tests.support.sdk import async_sdk

# Envoy hands these requests to the HTTP door unread (the Skills API: envoy_config/routes.py
# ``_files_routes``, the processor off): on PostgreSQL its HTTP-door tests run the same store code
pytestmark = pytest.mark.store_via_http_door

A, B, BUDGET = "tenant-a", "tenant-b", "tenant-budget"
TENANTS = {BUDGET: {"max_stored_bytes": 4000}}
MANIFEST = ("---\nname: csv-insights\ndescription: Summarise a CSV file with pandas.\n---\n\n"
            "# Use\nRun scripts/run.py.\n")
SCRIPT = b"print('the skill ran')\n"


def skill_zip(manifest: str = MANIFEST, *, extra: list[tuple[str, bytes, int | None]] | None = None,
              top: str = "") -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data, mode in [("SKILL.md", manifest.encode(), None),
                                 ("scripts/run.py", SCRIPT, stat.S_IFREG | 0o755), *(extra or [])]:
            info = zipfile.ZipInfo(top + name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if mode is not None:
                info.create_system = 3
                info.external_attr = mode << 16
            archive.writestr(info, data)
    return out.getvalue()


@dataclass
class Stack:
    sidecar: Sidecar
    envoy: EnvoyProcess
    envoy_url: str
    workdir: Path


@pytest.fixture(scope="module")
async def stack(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    workdir = Path(tempfile.mkdtemp(prefix="rb-skill-trees-"))  # pytest's own lies under root's 0700
    workdir.chmod(0o711)  # as a code_workdir must be: the sandbox's uid traverses it to the trees bound in
    env = {"RESPONSES_BRIDGE_AUTH": "header", "RESPONSES_BRIDGE_TENANTS": orjson.dumps(TENANTS).decode(),
           "RESPONSES_BRIDGE_CODE_WORKDIR": str(workdir), "RESPONSES_BRIDGE_CODE_TIMEOUT": "20"}
    async with running_sidecar(str(tmp_path_factory.mktemp("skills")), fake_upstream, env=env,
                               ready_headers={"x-tenant-id": A}) as sidecar:
        listen_port = free_port()
        envoy = await start_envoy(render_bootstrap(
            listen_port=listen_port, extproc_port=sidecar.extproc_port,
            http_port=int(sidecar.http_url.rsplit(":", 1)[1]), upstream=fake_upstream, admin_port=0))
        try:
            yield Stack(sidecar, envoy, f"http://127.0.0.1:{listen_port}", workdir)
        finally:
            envoy.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(params=["http", "envoy"])
def door(request: pytest.FixtureRequest, stack: Stack) -> str:
    if request.param == "envoy" and not have_envoy():
        pytest.skip("envoy binary not available")
    return stack.sidecar.http_url if request.param == "http" else stack.envoy_url


def sdk(url: str, tenant: str = A) -> openai.AsyncOpenAI:
    return async_sdk(base_url=f"{url}/v1", api_key="sk-unused", max_retries=0, timeout=120,
                              default_headers={"x-tenant-id": tenant})


async def raw(url: str, method: str, path: str, tenant: str = A, **options: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession(url) as http, http.request(method, path, headers={"x-tenant-id": tenant},
                                                                **options) as response:
        body = await response.read()
        return response.status, orjson.loads(body) if body[:1] == b"{" else body


def exact(model: type, body: dict[str, Any]) -> None:
    """The body is the SDK type's shape: every field it declares, nothing else."""
    model.model_validate(body)
    assert set(body) == set(model.model_fields), (set(body) ^ set(model.model_fields))


async def test_the_sdks_skills_calls_work_unmodified(door: str) -> None:
    async with sdk(door) as client:
        made = await client.skills.create(files=("csv-insights.zip", skill_zip(top="csv-insights/"),
                                                 "application/zip"))
        assert isinstance(made, Skill) and made.id.startswith("skill_")
        assert (made.name, made.description) == ("csv-insights", "Summarise a CSV file with pandas.")
        assert (made.default_version, made.latest_version) == ("1", "1")
        directory = await client.skills.create(files=[
            ("report/SKILL.md", b"---\nname: report\ndescription: Write a report.\n---\n", "text/markdown"),
            ("report/templates/a.md", b"# A\n", "text/markdown")])
        assert directory.name == "report"
        listed = [skill.id async for skill in client.skills.list(limit=1)]  # paged one at a time
        assert listed[:2] == [directory.id, made.id]
        assert (await client.skills.retrieve(made.id)).model_dump() == made.model_dump()

        two = await client.skills.versions.create(made.id, files=("v2.zip", skill_zip(
            MANIFEST.replace("pandas", "the standard library")), "application/zip"), default=True)
        assert isinstance(two, SkillVersion) and (two.version, two.skill_id) == ("2", made.id)
        skill = await client.skills.retrieve(made.id)
        assert (skill.default_version, skill.latest_version) == ("2", "2")
        assert skill.description == "Summarise a CSV file with the standard library."
        versions = [v.version async for v in client.skills.versions.list(made.id)]
        assert versions == ["1", "2"]
        assert (await client.skills.versions.retrieve("1", skill_id=made.id)).description.endswith("pandas.")

        content = await client.skills.content.retrieve(made.id)
        assert content.response.headers["content-type"] == "application/zip"  # as OpenAI's spec says
        with zipfile.ZipFile(io.BytesIO(content.read())) as archive:
            assert "the standard library" in archive.read("SKILL.md").decode()
            assert archive.read("scripts/run.py") == SCRIPT
        first = await client.skills.versions.content.retrieve("1", skill_id=made.id)
        assert first.response.headers["content-type"] == "application/zip"
        with zipfile.ZipFile(io.BytesIO(first.read())) as archive:
            assert "pandas" in archive.read("SKILL.md").decode()

        updated = await client.skills.update(made.id, default_version="1")
        assert updated.default_version == "1" and updated.description.endswith("pandas.")
        gone = await client.skills.versions.delete("2", skill_id=made.id)
        assert isinstance(gone, DeletedSkillVersion) and (gone.deleted, gone.version) == (True, "2")
        with pytest.raises(openai.BadRequestError) as default:
            await client.skills.versions.delete("1", skill_id=made.id)
        assert default.value.body["param"] == "version"  # type: ignore[index]
        deleted = await client.skills.delete(made.id)
        assert isinstance(deleted, DeletedSkill) and deleted.deleted and deleted.id == made.id
        with pytest.raises(openai.NotFoundError):
            await client.skills.retrieve(made.id)
        await client.skills.delete(directory.id)


async def test_the_answers_are_exactly_the_sdks_shapes(door: str) -> None:
    form = aiohttp.FormData()
    form.add_field("files", skill_zip(), filename="s.zip", content_type="application/zip")
    status, skill = await raw(door, "POST", "/v1/skills", data=form)
    assert status == 200
    exact(Skill, skill)
    status, version = await raw(door, "GET", f"/v1/skills/{skill['id']}/versions/1")
    exact(SkillVersion, version)
    status, page = await raw(door, "GET", f"/v1/skills/{skill['id']}/versions")
    assert set(page) == {"object", "data", "first_id", "last_id", "has_more"} and page["object"] == "list"
    status, gone = await raw(door, "DELETE", f"/v1/skills/{skill['id']}")
    exact(DeletedSkill, gone)


def directory_form(parts: list[tuple[str, bytes, str]]) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for name, data, kind in parts:
        form.add_field("files[]", data, filename=name, content_type=kind)
    return form


def zip_form(data: bytes) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("files", data, filename="skill.zip", content_type="application/zip")
    return form


HOSTILE = {
    "zip bomb": lambda: zip_form(skill_zip(extra=[("zeros.bin", b"\0" * (16 << 20), None)])),
    "dot-dot path in a zip": lambda: zip_form(skill_zip(extra=[("../../etc/cron.d/x", b"x", None)])),
    "absolute path in a zip": lambda: zip_form(skill_zip(extra=[("/etc/passwd", b"x", None)])),
    "ten thousand files": lambda: zip_form(skill_zip(extra=[(f"f/{n}", b"", None) for n in range(10_000)])),
    "ten thousand parts": lambda: directory_form([("s/SKILL.md", MANIFEST.encode(), "text/markdown"),
                                                  *((f"s/{n}.txt", b"", "text/plain") for n in range(10_000))]),
    "symlink entry": lambda: zip_form(skill_zip(extra=[("passwd", b"/etc/passwd", stat.S_IFLNK | 0o777)])),
    "symlink part": lambda: directory_form([("s/SKILL.md", MANIFEST.encode(), "text/markdown"),
                                            ("s/passwd", b"/etc/passwd", "inode/symlink")]),
    "dot-dot part": lambda: directory_form([("s/SKILL.md", MANIFEST.encode(), "text/markdown"),
                                            ("s/../../x", b"x", "text/plain")]),
    "duplicate parts": lambda: directory_form([("SKILL.md", MANIFEST.encode(), "text/markdown"),
                                               ("a.txt", b"1", "text/plain"), ("a.txt", b"2", "text/plain")]),
    "no SKILL.md": lambda: zip_form(skill_zip().replace(b"SKILL.md", b"NOTES.md")),
    "no name": lambda: zip_form(skill_zip(MANIFEST.replace("name: csv-insights\n", ""))),
    "lone surrogate in the description": lambda: zip_form(skill_zip(MANIFEST.replace(
        "description: Summarise a CSV file with pandas.", 'description: "\\ud800"'))),
    "nested front matter": lambda: zip_form(skill_zip(MANIFEST.replace(
        "name: csv-insights\n", "name: csv-insights\nx: " + "[" * 3000 + "]" * 3000 + "\n"))),
    "a tar.gz": lambda: _tarball_form(),
}


def _tarball_form() -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("files", gzip.compress(b"not a zip"), filename="skill.tar.gz", content_type="application/gzip")
    return form


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_hostile_skills_are_refused_with_400s(door: str, case: str) -> None:
    status, body = await raw(door, "POST", "/v1/skills", data=HOSTILE[case]())
    assert status == 400, body
    assert set(body["error"]) == {"message", "type", "param", "code"} and body["error"]["param"] == "files", body
    named = {"nested front matter": "SKILL.md", "a tar.gz": "zip (application/zip)"}
    assert named.get(case, "") in body["error"]["message"], body


@pytest.mark.parametrize(("files", "named"), [
    ([("s/SKILL.md", MANIFEST.encode()), ("s/zeros.bin", b"\0" * (2 << 20))], "zeros.bin"),  # its zip: a bomb
    ([("s/SKILL.md", MANIFEST.encode()), ("s/" + "é" * 134, b"x")], "255 bytes"),  # 268 bytes of UTF-8
])
async def test_a_directory_upload_that_could_not_be_laid_out_is_refused_when_sent(
        door: str, files: list[tuple[str, bytes]], named: str) -> None:
    async with sdk(door) as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.skills.create(files=files)
    assert named in refused.value.body["message"] and refused.value.body["param"] == "files"  # type: ignore[index]


async def test_nothing_is_stored_from_a_refused_skill(stack: Stack) -> None:
    url = stack.sidecar.http_url
    for case in sorted(HOSTILE):
        await raw(url, "POST", "/v1/skills", tenant="tenant-hostile", data=HOSTILE[case]())
    _, listed = await raw(url, "GET", "/v1/skills", tenant="tenant-hostile")
    assert listed["data"] == []


async def test_another_tenants_skill_is_as_if_it_did_not_exist(stack: Stack) -> None:
    url = stack.sidecar.http_url
    async with sdk(url, A) as a:
        made = await a.skills.create(files=("s.zip", skill_zip(), "application/zip"))
    for method, path in (("GET", f"/v1/skills/{made.id}"), ("DELETE", f"/v1/skills/{made.id}"),
                         ("GET", f"/v1/skills/{made.id}/content"), ("GET", f"/v1/skills/{made.id}/versions"),
                         ("GET", f"/v1/skills/{made.id}/versions/1/content")):
        theirs = await raw(url, method, path, tenant=B)
        never = await raw(url, method, path.replace(made.id, "skill_" + "0" * 32), tenant=B)
        assert theirs[0] == never[0] == 404
        assert theirs[1]["error"]["message"].replace(made.id, "X") == never[1]["error"]["message"].replace(
            "skill_" + "0" * 32, "X")
    _, listed = await raw(url, "GET", "/v1/skills", tenant=B)
    assert made.id not in [skill["id"] for skill in listed["data"]]
    status, body = await raw(url, "POST", "/v1/containers", tenant=B, json={
        "name": "c", "skills": [{"type": "skill_reference", "skill_id": made.id}]})
    assert status == 404 and body["error"]["param"] == "skills[0].skill_id"


async def test_skills_bytes_count_against_the_tenants_stored_bytes(stack: Stack) -> None:
    url = stack.sidecar.http_url
    async with sdk(url, BUDGET) as budget:
        made = await budget.skills.create(files=("s.zip", skill_zip(), "application/zip"))
        size = len((await budget.skills.content.retrieve(made.id)).read())
        with pytest.raises(openai.BadRequestError) as refused:  # the file would pass the budget with the skill
            await budget.files.create(file=("a.txt", b"x" * (4000 - size + 1)), purpose="user_data")
        assert refused.value.body["code"] == "storage_limit_exceeded"  # type: ignore[index]
        with pytest.raises(openai.BadRequestError) as version:
            await budget.skills.versions.create(made.id, files=("s.zip", skill_zip(extra=[
                ("pad.bin", os.urandom(4000), None)]), "application/zip"))
        assert version.value.body["code"] == "storage_limit_exceeded"  # type: ignore[index]
        await budget.skills.delete(made.id)
        await budget.files.create(file=("a.txt", b"x" * (4000 - size + 1)), purpose="user_data")


CHECK = """
import os, runpy
print(open('/mnt/skills/csv-insights/SKILL.md').read().splitlines()[1])
print(open('/mnt/skills/inline-tool/SKILL.md').read().splitlines()[1])
runpy.run_path('/mnt/skills/csv-insights/scripts/run.py')
for attempt in (lambda: open('/mnt/skills/csv-insights/new.txt', 'w'),
                lambda: open('/mnt/skills/csv-insights/SKILL.md', 'a'),
                lambda: os.chmod('/mnt/skills/csv-insights/SKILL.md', 0o777),
                lambda: os.mkdir('/mnt/skills/other'),
                lambda: os.remove('/mnt/skills/csv-insights/scripts/run.py')):
    try:
        attempt()
        print('WRITABLE')
    except OSError as error:
        print('refused', error.errno)
print(sorted(os.listdir('/mnt/skills')))
"""


@pytest.mark.skipif(check_bubblewrap()[1] is not None, reason="bubblewrap cannot sandbox here")
async def test_a_containers_skills_are_laid_out_read_only_for_the_code_interpreter(stack: Stack) -> None:
    url = stack.sidecar.http_url
    upstream = UpstreamLog(stack.sidecar.upstream_url.removesuffix("/v1"))
    inline = {"type": "inline", "name": "inline-tool", "description": "An inline tool.",
              "source": {"type": "base64", "media_type": "application/zip",
                         "data": base64.b64encode(skill_zip(MANIFEST.replace("csv-insights", "inline"))).decode()}}
    async with sdk(url, A) as client:
        made = await client.skills.create(files=("s.zip", skill_zip(), "application/zip"))
        container = await client.containers.create(name="with skills", skills=[
            {"type": "skill_reference", "skill_id": made.id, "version": "1"}, inline])  # type: ignore[list-item]
        code = base64.b64encode(orjson.dumps({"code": CHECK})).decode()
        response = await client.responses.create(
            model="fake-model", input=f"call python [args64={code}]", include=["code_interpreter_call.outputs"],
            tools=[{"type": "code_interpreter", "container": container.id}])
    call = response.output[0]
    assert call.type == "code_interpreter_call" and call.status == "completed", call
    logs = "".join(output.logs for output in call.outputs or () if output.type == "logs")
    lines = logs.splitlines()
    assert lines[:3] == ["name: csv-insights", "name: inline", "the skill ran"], logs
    # the tree is read-only whatever the code tries: EROFS, or EACCES first for a file the sandbox's uid does not own
    assert len(lines[3:8]) == 5 and set(lines[3:8]) <= {"refused 30", "refused 13"}, logs
    assert lines[8] == "['csv-insights', 'inline-tool']", logs
    scratch = stack.workdir / f"responses-bridge-{os.geteuid()}"  # the bridge's own directory (sandbox/scratch.py)
    assert [entry.name for entry in stack.workdir.iterdir()] == [scratch.name]
    # what stays on the host is the cache of unpacked skills (services/containers/skill_cache.py): one entry per version
    [cache] = scratch.iterdir()
    assert cache.name.startswith("skills-") and len(list(cache.iterdir())) == 2
    offered = next(entry["body"] for entry in reversed(await upstream.entries())
                   if "inline-tool" in orjson.dumps(entry["body"].get("tools", [])).decode())
    description = next(tool["function"]["description"] for tool in offered["tools"]
                       if "/mnt/skills" in tool["function"].get("description", ""))
    assert "- csv-insights: Summarise a CSV file with pandas. (/mnt/skills/csv-insights/SKILL.md)" in description
    assert "- inline-tool: An inline tool. (/mnt/skills/inline-tool/SKILL.md)" in description


async def test_skills_on_the_code_interpreters_auto_container_are_refused_not_dropped(stack: Stack) -> None:
    """OpenAI's ``auto`` container for the code interpreter has no ``skills``: one sent there is a 400 naming it,
    never silently run without them."""
    status, body = await raw(stack.sidecar.http_url, "POST", "/v1/responses", json={
        "model": "fake-model", "input": "hi",
        "tools": [{"type": "code_interpreter", "container": {"type": "auto", "skills": []}}]})
    assert status == 400 and body["error"]["param"] == "tools[0].container.skills", body
