"""A skill's files as a client sends them (services/containers/skill_bundle.py): a SKILL.md front matter naming and
describing it, and every hostile shape refused with a 400 naming ``files`` before a byte is inflated past what is
allowed: zip bombs (by ratio, by declared sizes, by an entry holding more than it declares), ``../`` and absolute paths,
10,000 files, symbolic links, duplicates, a path both a file and a directory, a missing or invalid manifest."""

from __future__ import annotations

import io
import stat
import struct
import zipfile
from pathlib import Path

import pytest
import yaml

from responses_bridge.protocol.errors import APIError
from responses_bridge.services.containers import skill_bundle
from responses_bridge.services.containers.skill_bundle import (
    SkillFile,
    bundle,
    canonical_zip,
    check_path,
    read_zip,
)
from responses_bridge.services.containers.skill_unpack import unpack_kept

MANIFEST = b"---\nname: csv-insights\ndescription: Summarise a CSV file.\n---\n\n# How\nRun scripts/run.py.\n"


def make_zip(entries: list[tuple[str, bytes]], *, compression: int = zipfile.ZIP_DEFLATED,
             modes: dict[str, int] | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as archive:
        for name, data in entries:
            info = zipfile.ZipInfo(name)
            info.compress_type = compression
            if modes and name in modes:
                info.create_system = 3
                info.external_attr = modes[name] << 16
            archive.writestr(info, data)
    return out.getvalue()


def refused(data: bytes, words: str) -> APIError:
    with pytest.raises(APIError) as caught:
        read_zip(data)
    assert caught.value.status == 400 and caught.value.param == "files", caught.value.message
    assert words in caught.value.message, caught.value.message
    return caught.value


def test_a_zip_gives_the_manifests_name_and_description_and_its_files() -> None:
    skill = read_zip(make_zip([("SKILL.md", MANIFEST), ("scripts/run.py", b"print('hi')\n")],
                              modes={"scripts/run.py": stat.S_IFREG | 0o755}))
    assert (skill.name, skill.description) == ("csv-insights", "Summarise a CSV file.")
    assert [(file.path, file.executable) for file in skill.files] == [("SKILL.md", False), ("scripts/run.py", True)]


def test_one_top_directory_is_taken_as_the_skill() -> None:
    skill = read_zip(make_zip([("csv-insights/", b""), ("csv-insights/SKILL.md", MANIFEST),
                               ("csv-insights/a/b.txt", b"x")]))
    assert [file.path for file in skill.files] == ["SKILL.md", "a/b.txt"]


def test_the_kept_zip_is_the_bridges_own_and_reads_back_the_same() -> None:
    skill = read_zip(make_zip([("SKILL.md", MANIFEST), ("run.sh", b"echo hi\n")],
                              modes={"run.sh": stat.S_IFREG | 0o4755}))  # setuid asked: never kept
    kept = canonical_zip(skill)
    assert canonical_zip(read_zip(kept)) == kept
    with zipfile.ZipFile(io.BytesIO(kept)) as archive:
        modes = {info.filename: info.external_attr >> 16 for info in archive.infolist()}
    assert modes == {"SKILL.md": stat.S_IFREG | 0o644, "run.sh": stat.S_IFREG | 0o755}


def test_a_kept_skill_unpacks_streamed_with_plain_modes(tmp_path: Path) -> None:
    skill = read_zip(make_zip([("SKILL.md", MANIFEST), ("bin/run.sh", b"echo hi\n")],
                              modes={"bin/run.sh": stat.S_IFREG | 0o777}))
    kept = tmp_path / "kept.zip"
    kept.write_bytes(canonical_zip(skill))
    assert unpack_kept(kept, tmp_path / "csv-insights") == (2, len(MANIFEST) + 8)
    assert (tmp_path / "csv-insights" / "SKILL.md").read_bytes() == MANIFEST
    assert stat.S_IMODE((tmp_path / "csv-insights" / "bin" / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "csv-insights" / "SKILL.md").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "csv-insights" / "bin").stat().st_mode) == 0o755


def test_a_kept_zip_damaged_since_is_refused_before_anything_is_written(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    kept = tmp_path / "kept.zip"
    kept.write_bytes(make_zip([("../evil", b"x"), ("SKILL.md", MANIFEST)]))
    with pytest.raises(APIError, match="leave the skill"):
        unpack_kept(kept, tmp_path / "out")
    kept.write_bytes(make_zip([("run.sh", b"echo\n")]))
    with pytest.raises(APIError, match=r"no SKILL\.md"):
        unpack_kept(kept, tmp_path / "out")
    monkeypatch.setattr(skill_bundle, "MAX_TOTAL_BYTES", 10)
    kept.write_bytes(make_zip([("SKILL.md", MANIFEST)], compression=zipfile.ZIP_STORED))
    with pytest.raises(APIError, match="at most 10 bytes together"):
        unpack_kept(kept, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_highly_compressed_entry_is_refused_as_a_bomb() -> None:
    refused(make_zip([("SKILL.md", MANIFEST), ("zeros.bin", b"\0" * (8 << 20))]), "zip bomb")


def test_declared_sizes_past_the_limits_are_refused_before_inflating(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(skill_bundle, "MAX_TOTAL_BYTES", 1000)
    entries = [("SKILL.md", MANIFEST), *((f"f{n}.txt", bytes(range(256)) * 2) for n in range(3))]
    refused(make_zip(entries, compression=zipfile.ZIP_STORED), "at most 1000 bytes together")
    monkeypatch.setattr(skill_bundle, "MAX_FILE_BYTES", 100)
    refused(make_zip([("SKILL.md", MANIFEST[:90]), ("big.txt", b"y" * 101)], compression=zipfile.ZIP_STORED),
            "at most 100 bytes")


def test_an_entry_holding_more_than_it_declares_is_refused() -> None:
    data = bytearray(make_zip([("SKILL.md", MANIFEST), ("a.txt", b"A" * 1000)], compression=zipfile.ZIP_STORED))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        info = archive.getinfo("a.txt")
    # shrink a.txt's declared size in its central directory entry (the last, offset 24) and local header (22)
    last = data.rfind(b"PK\x01\x02")
    struct.pack_into("<I", data, last + 24, 10)
    struct.pack_into("<I", data, info.header_offset + 22, 10)
    refused(bytes(data), "cannot be read")


@pytest.mark.parametrize("name", ["../evil.txt", "a/../../evil.txt", "/etc/passwd", "C:/x.txt", "a\\..\\b",
                                  "a/\x01b"])
def test_paths_leaving_the_skill_are_refused(name: str) -> None:
    with pytest.raises(APIError) as caught:
        read_zip(make_zip([("SKILL.md", MANIFEST), (name, b"x")]))
    assert caught.value.status == 400 and caught.value.param == "files"
    assert "path" in caught.value.message


def test_ten_thousand_files_are_refused() -> None:
    entries = [("SKILL.md", MANIFEST), *((f"f/{n}.txt", b"") for n in range(10_000))]
    refused(make_zip(entries, compression=zipfile.ZIP_STORED), "at most 1000 files")
    with pytest.raises(APIError, match="at most 1000 files"):
        bundle([SkillFile("SKILL.md", MANIFEST), *(SkillFile(f"{n}.txt", b"") for n in range(10_000))])


def test_a_symbolic_link_entry_is_refused() -> None:
    refused(make_zip([("SKILL.md", MANIFEST), ("passwd", b"/etc/passwd")],
                     modes={"passwd": stat.S_IFLNK | 0o777}), "symbolic link")


def test_a_device_entry_is_refused() -> None:
    refused(make_zip([("SKILL.md", MANIFEST), ("null", b"")], modes={"null": stat.S_IFCHR | 0o666}),
            "not a regular file")


def test_duplicates_and_file_directory_clashes_are_refused() -> None:
    with pytest.warns(UserWarning):  # zipfile itself warns of the duplicate name
        refused(make_zip([("SKILL.md", MANIFEST), ("a.txt", b"1"), ("a.txt", b"2")]), "twice")
    refused(make_zip([("SKILL.md", MANIFEST), ("./b.txt", b"1"), ("b.txt", b"2")]), "twice")
    refused(make_zip([("SKILL.md", MANIFEST), ("a", b"1"), ("a/b", b"2")]), "both a file and a directory")


def test_a_missing_manifest_is_refused() -> None:
    refused(make_zip([("README.md", b"hello")]), "no SKILL.md")
    refused(make_zip([("a/SKILL.md", MANIFEST), ("b/x.txt", b"1")]), "no SKILL.md")


@pytest.mark.parametrize(("manifest", "words"), [
    (b"# no front matter\n", "must start with YAML front matter"),
    (b"---\nname: x\n", "no closing '---'"),
    (b"---\nname: [unclosed\n---\n", "not valid YAML"),
    (b"---\n- a list\n---\n", "YAML mapping"),
    (b"---\ndescription: d\n---\n", "has no 'name'"),
    (b"---\nname: x\n---\n", "has no 'description'"),
    (b"---\nname: ../x\ndescription: d\n---\n", "Invalid 'name'"),
    (b"---\nname: 12\ndescription: d\n---\n", "Invalid 'name'"),
    (b"---\nname: x\ndescription: ''\n---\n", "Invalid 'description'"),
    # a lone surrogate: libyaml refuses the escape itself; the pure-Python loader makes one, refused after
    (b'---\nname: x\ndescription: "a\\ud800b"\n---\n',
     "not valid YAML" if yaml.__with_libyaml__ else "Invalid 'description'"),
    (b'---\nname: x\ndescription: "a\\x00b"\n---\n', "Invalid 'description'"),
    (b"\xff\xfe---\n", "not UTF-8"),
])
def test_an_invalid_manifest_is_refused_naming_the_field(manifest: bytes, words: str) -> None:
    error = refused(make_zip([("SKILL.md", manifest)]), words)
    assert error.code in ("invalid_skill_manifest", "missing_skill_manifest")


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="this PyYAML was built without libyaml")
def test_the_front_matter_is_read_by_libyaml_where_pyyaml_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client's front matter (up to 64 KiB) parsed by the pure-Python scanner cost the sidecar ~1 CPU-s for a
    nesting of ``[`` it then refused; libyaml refuses it at its own nesting bound in a millisecond."""
    def pure_python_parse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the pure-Python loader parsed a manifest")

    monkeypatch.setattr(yaml.SafeLoader, "__init__", pure_python_parse)
    assert skill_bundle.manifest(MANIFEST) == ("csv-insights", "Summarise a CSV file.")
    nested = b"---\nname: x\ndescription: d\nx: " + b"[" * 32000 + b"]" * 32000 + b"\n---\n"
    refused(make_zip([("SKILL.md", nested)]), "not valid YAML")


@pytest.mark.parametrize("manifest", [MANIFEST, b"---\nname: x\ndescription: 'a: b'\nx: [1, {y: [2]}]\n---\n",
                                      b"---\nname: x\ndescription: [d]\n---\n", b"---\nname: [x\n---\n"])
def test_without_libyaml_the_pure_python_loader_gives_the_same(monkeypatch: pytest.MonkeyPatch,
                                                                 manifest: bytes) -> None:
    def outcome() -> object:
        try:
            return skill_bundle.manifest(manifest)
        except APIError as error:
            return (error.code, error.param, error.message.split(":")[0])

    with_libyaml = outcome()
    monkeypatch.delattr(yaml, "CSafeLoader", raising=False)
    assert skill_bundle._safe_loader() is yaml.SafeLoader
    assert outcome() == with_libyaml


def test_not_a_zip_and_encrypted_entries_are_refused() -> None:
    refused(b"PK\x03\x04 not really", "cannot be read")
    data = bytearray(make_zip([("SKILL.md", MANIFEST)], compression=zipfile.ZIP_STORED))
    last = data.rfind(b"PK\x01\x02")
    struct.pack_into("<H", data, last + 8, 1)  # the central directory's flag bits: encrypted
    refused(bytes(data), "encrypted")


def test_check_path_normalises_relative_paths() -> None:
    assert check_path("./a//b/./c.txt") == "a/b/c.txt"
    with pytest.raises(APIError):
        check_path("a/" * 20 + "x")
    with pytest.raises(APIError):
        check_path("x" * 300)


def test_a_huge_central_directory_is_refused_before_zipfile_parses_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """zipfile makes an object per central directory entry before any check could run: the end record's count and
    size are read first."""
    data = make_zip([("SKILL.md", MANIFEST), *((f"{n}", b"") for n in range(2500))], compression=zipfile.ZIP_STORED)
    parsed: list[bytes] = []
    monkeypatch.setattr(zipfile, "ZipFile", lambda data: parsed.append(data))  # never reached
    refused(data, "the zip declares 2501 entries")
    assert parsed == []
