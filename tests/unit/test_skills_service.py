"""Skills over both stores (SQLite with bytes on disk, PostgreSQL with bytes in the database): versions numbered by
the store (never reused), the default version and what it names, paging, tenancy (another tenant's skill is a
missing one), the tenant's ``max_stored_bytes`` covering skills' bytes with files', also for versions made at
once, a container's own copies of its skills (deleted with it, kept by the file bytes sweep)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import os
import time
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from responses_bridge.protocol.errors import APIError
from responses_bridge.services.containers.container_skills import ContainerSkills
from responses_bridge.services.containers.containers import ContainerService
from responses_bridge.services.containers.skill_bundle import SkillBundle, read_zip
from responses_bridge.services.containers.skills import SkillService
from responses_bridge.services.files.files import FileService
from responses_bridge.store.postgres.containers.containers import PostgresContainerStore
from responses_bridge.store.postgres.containers.skills import PostgresSkillStore
from responses_bridge.store.postgres.files.file_bytes import PostgresFileBytes
from responses_bridge.store.postgres.files.files import PostgresFileStore
from responses_bridge.store.sqlite.containers.containers import SQLiteContainerStore
from responses_bridge.store.sqlite.containers.skills import SQLiteSkillStore
from responses_bridge.store.sqlite.files.files import SQLiteFileStore
from tests.support.blobs import read_all
from tests.unit.store_kinds import KINDS, postgres_database, sqlite_database

A, B = "tenant-a", "tenant-b"


def skill_zip(name: str = "csv-insights", description: str = "Summarise a CSV file.", extra: bytes = b"") -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("SKILL.md", f"---\nname: {name}\ndescription: {description}\n---\nUse it.\n")
        archive.writestr("scripts/run.py", b"print('ran')\n" + extra)
    return out.getvalue()


def bundle_of(**options: object) -> SkillBundle:
    return read_zip(skill_zip(**options))  # type: ignore[arg-type]


class Services:
    def __init__(self, skills: SkillService, containers: ContainerService, files: FileService) -> None:
        self.skills = skills
        self.containers = containers
        assert containers.skills is not None
        self.on_containers: ContainerSkills = containers.skills
        self.files = files


@contextlib.asynccontextmanager
async def services_over(kind: str, tmp_path: Path, request: pytest.FixtureRequest, *,
                        max_stored_bytes: int | None = None, connections: int = 1) -> AsyncIterator[Services]:
    def limit(tenant: str) -> int | None:
        return max_stored_bytes

    if kind == "sqlite":
        async with sqlite_database(tmp_path) as db:
            files = FileService(SQLiteFileStore(db), tmp_path / "files", 1 << 20, purge_interval=0,
                                max_stored_bytes=limit)
            await files.start()
            skills = SkillService(SQLiteSkillStore(db), files.contents, max_stored_bytes=limit)
            on_containers = ContainerSkills(SQLiteSkillStore(db), files.contents, max_stored_bytes=limit)
            yield Services(skills, ContainerService(SQLiteContainerStore(db), files.contents, files, file_bytes=1000,
                                                    container_bytes=1500, purge_interval=0, skills=on_containers,
                                                    max_stored_bytes=limit), files)
            await files.aclose()
    else:
        async with postgres_database(request, min_size=connections) as db:
            files = FileService(PostgresFileStore(db), None, 1 << 20, purge_interval=0,
                                contents=PostgresFileBytes(db), max_stored_bytes=limit)
            await files.start()
            skills = SkillService(PostgresSkillStore(db), files.contents, max_stored_bytes=limit)
            on_containers = ContainerSkills(PostgresSkillStore(db), files.contents, max_stored_bytes=limit)
            yield Services(skills, ContainerService(PostgresContainerStore(db), files.contents, files,
                                                    file_bytes=1000, container_bytes=1500, purge_interval=0,
                                                    skills=on_containers, max_stored_bytes=limit), files)
            await files.aclose()


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def content(service: SkillService, skill_id: str, version: str | None, tenant: str = A) -> bytes:
    reader, _ = await service.open_content(skill_id, version, tenant=tenant)
    return await read_all(reader)


async def test_versions_are_numbered_by_the_store_and_the_default_names_the_skill(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    async with services_over(kind, tmp_path, request) as s:
        made = await s.skills.create(bundle_of(), tenant=A)
        assert made["object"] == "skill" and made["default_version"] == "1" and made["latest_version"] == "1"
        assert made["name"] == "csv-insights"
        two = await s.skills.create_version(made["id"], bundle_of(name="csv-insights-2", description="Two."),
                                            make_default=False, tenant=A)
        assert two["version"] == "2" and two["object"] == "skill.version" and two["skill_id"] == made["id"]
        skill = await s.skills.retrieve(made["id"], tenant=A)
        assert (skill["default_version"], skill["latest_version"], skill["name"]) == ("1", "2", "csv-insights")
        skill = await s.skills.update(made["id"], {"default_version": "2"}, tenant=A)
        assert (skill["default_version"], skill["name"], skill["description"]) == ("2", "csv-insights-2", "Two.")
        three = await s.skills.create_version(made["id"], bundle_of(name="three"), make_default=True, tenant=A)
        assert (await s.skills.retrieve(made["id"], tenant=A))["name"] == "three"
        deleted = await s.skills.delete_version(made["id"], "2", tenant=A)
        assert deleted == {"id": two["id"], "object": "skill.version.deleted", "deleted": True, "version": "2"}
        with pytest.raises(APIError) as default:
            await s.skills.delete_version(made["id"], "3", tenant=A)
        assert default.value.status == 400 and default.value.param == "version"
        four = await s.skills.create_version(made["id"], bundle_of(), make_default=False, tenant=A)
        assert four["version"] == "4"  # a deleted number is never given again
        listed = await s.skills.list_versions(made["id"], tenant=A, after=None, limit=2, order="asc")
        assert [v["version"] for v in listed["data"]] == ["1", "3"] and listed["has_more"]
        rest = await s.skills.list_versions(made["id"], tenant=A, after=listed["last_id"], limit=2, order="asc")
        assert [v["version"] for v in rest["data"]] == ["4"] and not rest["has_more"]
        assert three["version"] == "3"
        assert read_zip(await content(s.skills, made["id"], None)).name == "three"
        assert read_zip(await content(s.skills, made["id"], "1")).name == "csv-insights"
        with pytest.raises(APIError) as unknown:
            await s.skills.update(made["id"], {"default_version": 2}, tenant=A)
        assert unknown.value.status == 404 and unknown.value.param == "default_version"


async def test_another_tenants_skill_is_a_missing_one(kind: str, tmp_path: Path,
                                                      request: pytest.FixtureRequest) -> None:
    async with services_over(kind, tmp_path, request) as s:
        made = await s.skills.create(bundle_of(), tenant=A)
        for attempt in (s.skills.retrieve(made["id"], tenant=B), s.skills.delete(made["id"], tenant=B),
                        s.skills.retrieve_version(made["id"], "1", tenant=B),
                        s.skills.update(made["id"], {"default_version": 1}, tenant=B),
                        s.skills.create_version(made["id"], bundle_of(), make_default=True, tenant=B),
                        s.skills.open_content(made["id"], None, tenant=B)):
            with pytest.raises(APIError) as missing:
                await attempt
            assert missing.value.status == 404
        assert (await s.skills.list(tenant=B, after=None, limit=20, order="desc"))["data"] == []
        with pytest.raises(APIError) as reference:
            await s.on_containers.resolve([{"type": "skill_reference", "skill_id": made["id"]}], tenant=B,
                                          param="skills")
        assert reference.value.status == 404 and reference.value.param == "skills[0].skill_id"
        assert (await s.skills.retrieve(made["id"], tenant=A))["id"] == made["id"]


async def test_skills_bytes_count_against_the_tenants_stored_bytes(kind: str, tmp_path: Path,
                                                                   request: pytest.FixtureRequest) -> None:
    size = len(bundle_zip := skill_zip())
    async with services_over(kind, tmp_path, request, max_stored_bytes=size * 2 + 100,
                             connections=4) as s:
        made = await s.skills.create(read_zip(bundle_zip), tenant=A)
        # versions at once: the store's check in each inserting transaction lets exactly one more through
        outcomes = await asyncio.gather(*(s.skills.create_version(made["id"], read_zip(bundle_zip),
                                                                  make_default=False, tenant=A)
                                          for _ in range(4)), return_exceptions=True)
        kept = [outcome for outcome in outcomes if isinstance(outcome, dict)]
        refused = [outcome for outcome in outcomes if isinstance(outcome, APIError)]
        assert len(kept) == 1 and len(refused) == 3, outcomes
        assert all(error.code == "storage_limit_exceeded" and error.param == "files" for error in refused)
        with pytest.raises(APIError) as refused_upload:  # files share the budget
            await upload(s.files, b"x" * 200)
        assert refused_upload.value.code == "storage_limit_exceeded"
        await s.skills.delete(made["id"], tenant=A)
        await upload(s.files, b"x" * 200)
        assert (await s.skills.list(tenant=A, after=None, limit=20, order="desc"))["data"] == []


async def upload(files: FileService, data: bytes) -> None:
    async with files.receive(tenant=A) as received:
        await received.write(data)
        await files.create(received, filename="a.txt", purpose="user_data", expires_after=None)


async def age_blobs(services: Services, kind: str) -> None:
    """Make every stored blob two hours old, past the sweep's grace for bytes without a row."""
    if kind == "sqlite":
        old = time.time() - 7200
        assert services.files.directory is not None
        for path in services.files.directory.iterdir():
            os.utime(path, (old, old))
    else:
        async with services.skills.blobs._db.acquire() as conn:  # type: ignore[attr-defined]
            await conn.execute("UPDATE file_blobs SET started_at = started_at - interval '2 hours'")


async def test_a_container_keeps_its_own_copies_of_its_skills(kind: str, tmp_path: Path,
                                                              request: pytest.FixtureRequest) -> None:
    async with services_over(kind, tmp_path, request) as s:
        made = await s.skills.create(bundle_of(), tenant=A)
        inline = {"type": "inline", "name": "inline-one", "description": "Inline.",
                  "source": {"type": "base64", "media_type": "application/zip",
                             "data": base64.b64encode(skill_zip(name="whatever")).decode()}}
        container = await s.containers.create({"name": "c", "skills": [
            {"type": "skill_reference", "skill_id": made["id"], "version": "latest"}, inline]}, tenant=A)
        await s.skills.delete(made["id"], tenant=A)  # the container keeps its copy
        s.on_containers.cache.workdir = tmp_path / "trees"
        s.on_containers.cache.workdir.mkdir()
        async with s.on_containers.laid_out(container["id"], tenant=A) as binds:
            assert [target for _, target in binds] == ["/mnt/skills/csv-insights", "/mnt/skills/inline-one"]
            trees = dict((target.rsplit("/", 1)[1], tree) for tree, target in binds)
            assert "name: whatever" in (trees["inline-one"] / "SKILL.md").read_text()
            assert (trees["csv-insights"] / "scripts" / "run.py").read_bytes() == b"print('ran')\n"
        scratch = s.on_containers.cache.workdir / f"responses-bridge-{os.geteuid()}"  # the bridge's own
        assert list(s.on_containers.cache.workdir.iterdir()) == [scratch]
        assert all(tree.parent == scratch / f"skills-{os.getpid()}" for tree in trees.values())
        async with s.on_containers.laid_out(container["id"], tenant=B) as binds:
            assert binds == []
        found = await s.on_containers.container_skills(container["id"], tenant=A)
        assert [(skill.name, skill.description) for skill in found] == [("csv-insights", "Summarise a CSV file."),
                                                                        ("inline-one", "Inline.")]
        assert "- inline-one: Inline. (/mnt/skills/inline-one/SKILL.md)" in await s.on_containers.note(
            container["id"], tenant=A)
        blobs = [skill.blob_id for skill in found]
        version = await s.skills.create(bundle_of(), tenant=A)
        await age_blobs(s, kind)
        assert await s.files.sweep() == 0  # the sweep keeps skills' and container skills' bytes
        assert read_zip(await content(s.skills, version["id"], None)).name == "csv-insights"
        assert [await stored(s, blob) for blob in blobs] == [True, True]
        await s.containers.delete(container["id"], tenant=A)
        assert await s.on_containers.container_skills(container["id"], tenant=A) == []
        assert [await stored(s, blob) for blob in blobs] == [False, False]


async def stored(services: Services, blob: str) -> bool:
    reader = await services.files.contents.open(blob)
    if reader is None:
        return False
    await reader.aclose()
    return True


@pytest.mark.parametrize(("skills", "param", "status"), [
    ("nope", "skills", 400),
    ([{"type": "other"}], "skills[0].type", 400),
    ([{"type": "skill_reference"}], "skills[0].skill_id", 400),
    ([{"type": "skill_reference", "skill_id": "skill_missing"}], "skills[0].skill_id", 404),
    ([{"type": "inline", "name": "x", "description": "d"}], "skills[0].source", 400),
    ([{"type": "inline", "name": "../x", "description": "d",
       "source": {"type": "base64", "media_type": "application/zip", "data": ""}}], "skills[0].name", 400),
    ([{"type": "inline", "name": "x", "description": "d",
       "source": {"type": "base64", "media_type": "application/zip", "data": "!!"}}], "skills[0].source.data", 400),
    ([{"type": "inline", "name": "x", "description": "d",
       "source": {"type": "base64", "media_type": "text/plain", "data": ""}}], "skills[0].source.media_type", 400),
])
async def test_bad_container_skills_are_refused_naming_the_param_and_nothing_is_made(
        skills: object, param: str, status: int, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    async with services_over("sqlite", tmp_path, request) as s:
        with pytest.raises(APIError) as refused:
            await s.containers.create({"name": "c", "skills": skills}, tenant=A)
        assert (refused.value.status, refused.value.param) == (status, param), refused.value.message
        assert (await s.containers.list(tenant=A, after=None, limit=20, order="desc"))["data"] == []


async def test_a_version_or_a_skill_that_does_not_exist_is_a_404(tmp_path: Path,
                                                                 request: pytest.FixtureRequest) -> None:
    async with services_over("sqlite", tmp_path, request) as s:
        made = await s.skills.create(bundle_of(), tenant=A)
        for attempt, param in ((s.skills.retrieve_version(made["id"], "7", tenant=A), "version"),
                               (s.skills.retrieve("skill_nope", tenant=A), "skill_id"),
                               (s.on_containers.resolve([{"type": "skill_reference", "skill_id": made["id"],
                                                   "version": "9"}], tenant=A, param="skills"),
                                "skills[0].version")):
            with pytest.raises(APIError) as missing:
                await attempt
            assert (missing.value.status, missing.value.param) == (404, param)
        with pytest.raises(APIError) as bad:
            await s.skills.retrieve_version(made["id"], "one", tenant=A)
        assert (bad.value.status, bad.value.param) == (400, "version")
