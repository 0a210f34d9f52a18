"""The cache of unpacked skills (services/containers/skill_cache.py): each skill version is unpacked once however many
calls and containers use it at once, an entry is whole or absent, entries a call holds are never removed, the least
recently used go past the budget, and a start removes the caches of processes that are gone. The last test runs
six sandbox calls at once over four skills through the real bubblewrap sandbox."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from responses_bridge.protocol.errors import APIError
from responses_bridge.sandbox import Sandbox, SandboxLimits
from responses_bridge.services.containers.skill_cache import PREFIX, SkillCache
from responses_bridge.services.containers.skills import keep_blob
from responses_bridge.services.files.files import new_file_id
from responses_bridge.store.base_skills import ContainerSkill
from responses_bridge.store.sqlite.files.file_bytes import DiskFileBytes
from tests.unit.test_sandbox import needs_sandbox


def skill_zip(name: str, padding: int = 0) -> bytes:
    """The same bytes for the same arguments: each member's time fixed (a name alone takes the current time, and
    two copies of one version made across a two-second step of the zip's clock were two versions)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        for member, text in (("SKILL.md", f"---\nname: {name}\ndescription: The {name} skill.\n---\nUse it.\n"),
                             ("scripts/run.py", f"print('{name} ran')\n" + "#" * padding)):
            archive.writestr(zipfile.ZipInfo(member, date_time=(2026, 1, 1, 0, 0, 0)), text)
    return out.getvalue()


@pytest.fixture
async def blobs(tmp_path: Path) -> AsyncIterator[DiskFileBytes]:
    store = DiskFileBytes(tmp_path / "blobs")
    await store.start()
    yield store
    await store.aclose()


async def stored(blobs: DiskFileBytes, name: str, *, container: str = "cntr_1", padding: int = 0) -> ContainerSkill:
    data = skill_zip(name, padding)
    return ContainerSkill(container, 0, name, f"The {name} skill.", len(data), await keep_blob(blobs, data))


def cache_dir(workdir: Path) -> Path:
    return workdir / f"responses-bridge-{os.geteuid()}" / f"{PREFIX}{os.getpid()}"


async def test_one_version_is_unpacked_once_for_every_container_and_call(blobs: DiskFileBytes,
                                                                        reachable_tmp: Path) -> None:
    cache = SkillCache(blobs, budget=1 << 30, workdir=reachable_tmp)
    # two containers' own copies of one version (the same bytes, two blobs), and another skill
    first, copy, other = (await stored(blobs, "alpha"), await stored(blobs, "alpha", container="cntr_2"),
                          await stored(blobs, "beta"))

    async def call(skills: list[ContainerSkill]) -> list[tuple[Path, str]]:
        async with cache.bound(skills) as binds:
            await asyncio.sleep(0.01)
            return binds

    results = await asyncio.gather(*(call([first, other]) for _ in range(5)), call([copy]))
    assert cache.unpacked == 2
    assert {target for binds in results for _, target in binds} == {"/mnt/skills/alpha", "/mnt/skills/beta"}
    alpha = results[0][0][0]
    assert results[-1] == [(alpha, "/mnt/skills/alpha")]  # the copy is the same entry
    assert (alpha / "scripts" / "run.py").read_text() == "print('alpha ran')\n"
    assert alpha.parent == cache_dir(reachable_tmp)
    assert sorted(path.name for path in cache_dir(reachable_tmp).iterdir()) == sorted(
        {binds[0][0].name for binds in results} | {results[0][1][0].name})  # no staging directory is left


async def test_past_the_budget_the_least_recently_used_go_never_one_a_call_holds(blobs: DiskFileBytes,
                                                                                reachable_tmp: Path) -> None:
    one, two, three = [await stored(blobs, name, padding=4000) for name in ("one", "two", "three")]
    cache = SkillCache(blobs, budget=9000, workdir=reachable_tmp)  # room for two of them
    async with cache.bound([one]) as held:
        for skill in (two, three):
            async with cache.bound([skill]):
                pass
        assert held[0][0].is_dir()  # held: kept, though it is the oldest
    remaining = sorted(path.name for path in cache_dir(reachable_tmp).iterdir())
    assert len(remaining) == 2 and held[0][0].name in remaining  # "two", the least recently used, went
    async with cache.bound([two]):
        pass
    assert cache.unpacked == 4  # "two" was unpacked again


async def test_a_skill_whose_blob_is_gone_is_left_out_and_a_broken_one_leaves_nothing(blobs: DiskFileBytes,
                                                                                     reachable_tmp: Path) -> None:
    cache = SkillCache(blobs, budget=1 << 30, workdir=reachable_tmp)
    kept = await stored(blobs, "kept")
    gone = ContainerSkill("cntr_1", 1, "gone", "", 1, new_file_id())
    async with cache.bound([gone, kept]) as binds:
        assert [target for _, target in binds] == ["/mnt/skills/kept"]
    broken = ContainerSkill("cntr_1", 2, "broken", "", 5, await keep_blob(blobs, b"not a zip at all"))
    with pytest.raises(APIError):  # (accepted skills are checked at upload: bytes damaged since)
        async with cache.bound([broken]):
            pytest.fail("never entered")
    assert [path.name for path in cache_dir(reachable_tmp).iterdir()] == [binds[0][0].name]


async def test_a_start_removes_the_caches_of_processes_that_are_gone(blobs: DiskFileBytes,
                                                                    reachable_tmp: Path) -> None:
    gone = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", "import os; print(os.getpid())"],
                                   capture_output=True, text=True, check=True)
    scratch = reachable_tmp / f"responses-bridge-{os.geteuid()}"
    scratch.mkdir(mode=0o711)
    dead, alive = scratch / f"{PREFIX}{gone.stdout.strip()}", scratch / f"{PREFIX}1"
    for directory in (dead, alive):
        (directory / "abc").mkdir(parents=True)
    cache = SkillCache(blobs, budget=1 << 30, workdir=reachable_tmp)
    async with cache.bound([await stored(blobs, "alpha")]):
        pass
    assert not dead.exists() and alive.is_dir() and cache_dir(reachable_tmp).is_dir()


@needs_sandbox
async def test_six_calls_at_once_over_four_skills_unpack_each_once(blobs: DiskFileBytes,
                                                                   reachable_tmp: Path) -> None:
    names = ["alpha", "beta", "gamma", "delta"]
    skills = [await stored(blobs, name) for name in names]
    cache = SkillCache(blobs, budget=1 << 30, workdir=reachable_tmp)
    sandbox = Sandbox.detect(SandboxLimits(timeout=20.0, concurrency=6))
    code = ("import os, subprocess\n"
            "print(sorted(os.listdir('/mnt/skills')), flush=True)\n"
            "for name in sorted(os.listdir('/mnt/skills')):\n"
            "    subprocess.run(['python3', f'/mnt/skills/{name}/scripts/run.py'])\n"
            "try:\n    open('/mnt/skills/alpha/x', 'w')\nexcept OSError as e:\n    print('refused', e.errno)\n")

    async def call() -> str:
        async with sandbox.call(prepare=lambda: cache.bound(skills)) as running:
            result = await running.run(code)
        assert result.outcome == "ok", result
        return result.stdout

    outputs = await asyncio.gather(*(call() for _ in range(6)))
    assert cache.unpacked == 4
    for output in outputs:
        lines = output.splitlines()
        assert lines[0] == str(sorted(names))
        assert lines[1:5] == [f"{name} ran" for name in sorted(names)]
        assert lines[5] in ("refused 30", "refused 13")
