"""An environment's ``capability_directories``: the paths checked as the SDK types them (bounded, relative to the
workspace, never out of a hosted one), and what a turn tells the model of them: a hosted container's skills and
``AGENTS.md`` read from its stored files (both stores: what every sandbox backend lays out), a self-hosted
environment's directories named."""

from __future__ import annotations

from pathlib import Path

import pytest

from responses_bridge.protocol.containers.capability_directories import MAX_DIRECTORIES, check_directories
from responses_bridge.protocol.errors import APIError
from responses_bridge.services.agents.environments.capability_directories import environment_note
from tests.unit.store_kinds import KINDS
from tests.unit.test_containers_service import Clock, chunks, service_over

SKILL = b"---\nname: csv-tools\ndescription: Summarise\n  CSV files.\n---\n\nRun summarise.py.\n"


def test_directories_are_made_absolute_and_checked() -> None:
    assert check_directories(None, "p") == ()
    assert check_directories(["caps", "/workspace/caps/", "./x/y", "/workspace"], "p") == (
        "/workspace/caps", "/workspace/x/y", "/workspace")
    assert check_directories(["skills", "/opt/caps"], "p", base="/srv/w") == ("/srv/w/skills", "/opt/caps")
    for value, param in [(["../x"], "p[0]"), (["/etc"], "p[0]"), (["a", "b/../../c"], "p[1]"), (["a\nb"], "p[0]"),
                         ([""], "p[0]"), (["a\\b"], "p[0]"), (["x" * 1025], "p[0]"), ("caps", "p"), ([3], "p"),
                         (["d"] * (MAX_DIRECTORIES + 1), "p")]:
        with pytest.raises(APIError) as caught:
            check_directories(value, "p")
        assert (caught.value.status, caught.value.param) == (400, param), value


async def test_a_self_hosted_environments_directories_are_named() -> None:
    session = {"environment": {"type": "self_hosted", "capability_directories": ["/srv/w/skills"]}}
    note = await environment_note(session, None, None, tenant="")
    assert "- /srv/w/skills" in note and "SKILL.md" in note and "AGENTS.md" in note
    assert await environment_note({"environment": {"type": "none"}}, None, None, tenant="") == ""


@pytest.mark.parametrize("kind", KINDS)
async def test_a_hosted_containers_skills_are_read_from_its_files(kind: str, tmp_path: Path,
                                                                  request: pytest.FixtureRequest) -> None:
    async with service_over(kind, tmp_path, request, Clock(), container_bytes=1 << 20, file_bytes=1 << 20) as service:
        container = await service.new_container("env", tenant="t")
        for path, data in [("/mnt/data/caps/csv-tools/SKILL.md", SKILL),
                           ("/mnt/data/caps/AGENTS.md", b"Be brief.\n"),
                           ("/mnt/data/caps/broken/SKILL.md", b"no front matter\n"),
                           ("/mnt/data/caps/a/b/c/SKILL.md", SKILL),  # too deep below the directory
                           ("/mnt/data/capsule/SKILL.md", SKILL),  # a sibling sharing the name's start
                           ("/mnt/data/other/AGENTS.md", b"not offered\n")]:
            await service.put_bytes(container, path, chunks(data), source="user", tenant="t")
        session = {"environment": {"type": "openai_hosted", "id": container.id,
                                   "capability_directories": ["/workspace/caps"]}}
        note = await environment_note(session, service.store, service.blobs, tenant="t")
        assert note.splitlines()[1:] == [
            "- csv-tools: Summarise CSV files. (/mnt/data/caps/csv-tools/SKILL.md)",
            "Instructions for working in the environment are in these files; read them before you start and "
            "follow them:", "- /mnt/data/caps/AGENTS.md"]
        # another tenant's container holds nothing for it
        assert await environment_note(session, service.store, service.blobs, tenant="u") == ""
