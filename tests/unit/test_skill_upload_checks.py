"""What a skill upload is refused or spared at upload, so that what is accepted always lays out: a file name past
the file system's 255 bytes, deeply nested YAML in SKILL.md (a 400, never a RecursionError's 500), a directory
upload whose bridge-made zip would fail the lay-out's own zip-bomb check; and macOS's ``__MACOSX/`` entries
passed over."""

from __future__ import annotations

import io
import zipfile

import pytest

from responses_bridge.protocol.errors import APIError
from responses_bridge.services.containers.skill_bundle import (
    SkillFile,
    bundle,
    canonical_zip,
    check_path,
    read_zip,
)

MANIFEST = b"---\nname: tool\ndescription: A tool.\n---\nUse it.\n"


def _zip(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return out.getvalue()


def test_a_name_past_255_bytes_is_refused_naming_the_file() -> None:
    long_name = "é" * 134 + ".txt"  # 272 bytes in UTF-8, under 255 characters
    with pytest.raises(APIError) as refused:
        check_path(f"docs/{long_name}")
    assert refused.value.param == "files" and "255 bytes" in refused.value.message and "docs/" in refused.value.message
    assert check_path("docs/" + "e" * 200) == "docs/" + "e" * 200


def test_deeply_nested_front_matter_is_a_400() -> None:
    nested = b"---\nname: tool\ndescription: d\nx: " + b"[" * 5000 + b"]" * 5000 + b"\n---\n"
    with pytest.raises(APIError) as refused:
        bundle([SkillFile("SKILL.md", nested)])
    assert refused.value.status == 400 and "SKILL.md" in refused.value.message


def test_macos_resource_forks_are_passed_over() -> None:
    skill = read_zip(_zip({"tool/SKILL.md": MANIFEST, "__MACOSX/tool/._SKILL.md": b"\x00\x05\x16\x07",
                           "tool/run.py": b"print(1)\n"}))
    assert [file.path for file in skill.files] == ["SKILL.md", "run.py"]


def test_a_directory_upload_that_compresses_too_well_is_refused_at_upload() -> None:
    """The bridge's own zip of it would fail the zip-bomb check every lay-out makes: refused when sent."""
    skill = bundle([SkillFile("SKILL.md", MANIFEST), SkillFile("zeros.bin", b"\x00" * (4 << 20))])
    with pytest.raises(APIError) as refused:
        read_zip(canonical_zip(skill))
    assert "zeros.bin" in refused.value.message
