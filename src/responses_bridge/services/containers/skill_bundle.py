"""A skill's files as a client sends them, checked and made canonical: a directory upload (one part per file, the
filename carrying its relative path) or one zip, with a ``SKILL.md`` whose YAML front matter (between ``---``
lines) names the skill and describes it.

Everything here is untrusted input, read with bounded work before anything is stored: the number of files, each
file's bytes and all of them together, a path's length and depth; a zip's entries are checked on their declared
sizes and compression ratio before a byte is inflated, then read with the declared size as a hard cap (zipfile
stops there and checks the CRC, so an entry that inflates past what it declares is refused, not written). Paths
that leave the skill (``..``, absolute, drive letters, backslashes), duplicates, a path that is both a file and a
directory, links and other non-regular entries, encrypted entries and a missing or invalid ``SKILL.md`` are 400s
naming ``files``. What is kept is a zip the bridge wrote itself (:func:`canonical_zip`): only regular files, each
0644 or 0755, so laying it out (skill_unpack.py) never trusts what a client's archive claimed.
"""

from __future__ import annotations

import io
import posixpath
import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...protocol.errors import APIError, invalid_request

if TYPE_CHECKING:
    import yaml

MIB = 1 << 20
MAX_TOTAL_BYTES = 64 * MIB
"""A skill's files together, uncompressed."""
MAX_FILE_BYTES = 16 * MIB
MAX_FILES = 1000
MAX_PATH = 255
MAX_NAME_BYTES = 255
"""One name of a path (a file or a directory), in UTF-8 bytes: what Linux file systems hold (NAME_MAX)."""
MAX_DEPTH = 16
IGNORED_TOPS = ("__MACOSX/",)
"""Zip entries macOS's archiver adds beside the files (resource forks): not the skill's, passed over."""
MAX_RATIO = 200
"""The most an entry may inflate (uncompressed / compressed) once past :data:`RATIO_FLOOR` bytes: a zip bomb's
entries inflate thousands of times; real text and code stay well under a hundred."""
RATIO_FLOOR = 1 * MIB
MAX_ZIP_BYTES = MAX_TOTAL_BYTES + 4 * MIB
"""A zip as uploaded (compressed data plus its directories)."""
MAX_DIRECTORY_BYTES = 2 * MIB
"""A zip's central directory: what zipfile parses whole (an object per entry) before any check of ours can run,
so its size and entry count are read from the end record first."""
MAX_FRONT_MATTER = 64 * 1024
MAX_NAME = 64
MAX_DESCRIPTION = 1024
MANIFEST = "SKILL.md"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
READ_CHUNK = 1 << 16


@dataclass(frozen=True, slots=True)
class SkillFile:
    path: str  # relative, normalised, '/'-separated
    data: bytes
    executable: bool = False


@dataclass(frozen=True, slots=True)
class SkillBundle:
    """A checked skill: its manifest's ``name`` and ``description``, and its files (``SKILL.md`` among them)."""

    name: str
    description: str
    files: tuple[SkillFile, ...]

    @property
    def bytes(self) -> int:
        return sum(len(file.data) for file in self.files)


def refused(message: str, param: str = "files", code: str = "invalid_skill") -> APIError:
    return invalid_request(message, param=param, code=code)


def check_path(raw: str, param: str = "files") -> str:
    """A file's path inside the skill, normalised; a 400 for one that could leave it or cannot be laid out."""
    shown = raw[:200]
    if not raw or not _text(raw) or any(ord(char) < 0x20 for char in raw):
        raise refused(f"Invalid skill file path {shown!r}: empty, or holding control characters.", param)
    if "\\" in raw or raw.startswith("/") or re.match(r"^[A-Za-z]:", raw):
        raise refused(f"Invalid skill file path {shown!r}: paths are relative and '/'-separated.", param)
    parts = [part for part in raw.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise refused(f"Invalid skill file path {shown!r}: '..' would leave the skill.", param)
    if not parts:
        raise refused(f"Invalid skill file path {shown!r}.", param)
    path = "/".join(parts)
    if any(len(part.encode("utf-8")) > MAX_NAME_BYTES for part in parts):
        raise refused(f"Skill file path {shown!r} has a name longer than {MAX_NAME_BYTES} bytes (UTF-8), which no "
                      "file system can hold.", param)
    if len(path) > MAX_PATH or len(parts) > MAX_DEPTH:
        raise refused(f"Skill file path {shown!r} is too long: at most {MAX_PATH} characters and {MAX_DEPTH} "
                      "levels.", param)
    return path


def _text(value: str) -> bool:
    """Is ``value`` text every store and answer can hold: UTF-8 (YAML's escapes can make lone surrogates), no
    NUL?"""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in value


def _safe_loader() -> type[yaml.SafeLoader | yaml.CSafeLoader]:
    """PyYAML's safe loader on libyaml (``CSafeLoader``) when PyYAML was built with it, as its wheels are; else the
    pure-Python one. Why: the front matter is a client's bytes, up to :data:`MAX_FRONT_MATTER`, and the pure-Python
    scanner's cost grows with the flow nesting it rescans: 64 KiB of ``[`` took it 1.2 CPU-s to refuse (Python's
    recursion limit) and a 64 KiB flow list 0.93 s, against libyaml's 0.001 s (its nesting bound, 1,000, refuses
    the first as invalid YAML) and 0.10 s. Both construct the same safe types (SafeConstructor)."""
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _front_matter(text: str, param: str) -> dict[str, object]:
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        raise refused(f"{MANIFEST} must start with YAML front matter between '---' lines, giving 'name' and "
                      "'description'.", param, "invalid_skill_manifest")
    try:
        end = next(index for index, line in enumerate(lines[1:], 1) if line.strip() == "---")
    except StopIteration:
        raise refused(f"{MANIFEST}'s front matter has no closing '---' line.", param,
                      "invalid_skill_manifest") from None
    block = "\n".join(lines[1:end])
    if len(block) > MAX_FRONT_MATTER:
        raise refused(f"{MANIFEST}'s front matter is longer than {MAX_FRONT_MATTER} characters.", param,
                      "invalid_skill_manifest")
    import yaml  # only a skill's upload reads YAML: a started sidecar does not pay for it (test_idle_imports)

    try:
        found = yaml.load(block, Loader=_safe_loader())  # a safe loader, libyaml's where PyYAML has it
    except yaml.YAMLError as error:
        reason = " ".join(str(error).split())[:200]
        raise refused(f"{MANIFEST}'s front matter is not valid YAML: {reason}", param,
                      "invalid_skill_manifest") from None
    except RecursionError:  # PyYAML composes nested collections by recursion: thousands of '[' are enough
        raise refused(f"{MANIFEST}'s front matter nests too deeply to be a manifest.", param,
                      "invalid_skill_manifest") from None
    if not isinstance(found, dict):
        raise refused(f"{MANIFEST}'s front matter must be a YAML mapping with 'name' and 'description'.", param,
                      "invalid_skill_manifest")
    return found


def manifest(data: bytes, param: str = "files") -> tuple[str, str]:
    """``name`` and ``description`` from a ``SKILL.md``; a 400 naming the field that is missing or invalid."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise refused(f"{MANIFEST} is not UTF-8 text.", param, "invalid_skill_manifest") from None
    found = _front_matter(text, param)
    name, description = found.get("name"), found.get("description")
    if name is None:
        raise refused(f"{MANIFEST}'s front matter has no 'name'.", param, "invalid_skill_manifest")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise refused(f"Invalid 'name' in {MANIFEST}'s front matter: expected 1 to {MAX_NAME} letters, digits, "
                      "'.', '_' or '-', starting with a letter or digit.", param, "invalid_skill_manifest")
    if description is None:
        raise refused(f"{MANIFEST}'s front matter has no 'description'.", param, "invalid_skill_manifest")
    if (not isinstance(description, str) or not description.strip() or len(description) > MAX_DESCRIPTION
            or not _text(description)):
        raise refused(f"Invalid 'description' in {MANIFEST}'s front matter: expected non-empty text (no NUL, no "
                      f"lone surrogate) of at most {MAX_DESCRIPTION} characters.", param, "invalid_skill_manifest")
    return name, description.strip()


def bundle(files: Iterable[SkillFile], param: str = "files") -> SkillBundle:
    """Check a skill's files (paths already :func:`check_path`-ed) as a whole: count, sizes, duplicates, a path
    both a file and a directory, and the manifest. A skill whose files all sit in one top directory (a folder
    uploaded or zipped with its name) is taken from inside it."""
    listed = list(files)
    if not listed:
        raise refused("A skill needs at least its SKILL.md file.", param, "missing_skill_manifest")
    if len(listed) > MAX_FILES:
        raise refused(f"A skill may hold at most {MAX_FILES} files ({len(listed)} sent).", param)
    tops = {file.path.split("/", 1)[0] for file in listed}
    if len(tops) == 1 and all("/" in file.path for file in listed):
        top = next(iter(tops))
        listed = [SkillFile(file.path[len(top) + 1:], file.data, file.executable) for file in listed]
    seen: set[str] = set()
    for file in listed:
        if file.path in seen:
            raise refused(f"The skill holds '{file.path[:200]}' twice.", param)
        seen.add(file.path)
    for file in listed:
        parent = posixpath.dirname(file.path)
        while parent:
            if parent in seen:
                raise refused(f"'{parent[:200]}' is both a file and a directory of the skill.", param)
            parent = posixpath.dirname(parent)
    total = sum(len(file.data) for file in listed)
    if total > MAX_TOTAL_BYTES:
        raise refused(f"A skill's files may hold at most {MAX_TOTAL_BYTES} bytes together.", param)
    found = next((file for file in listed if file.path == MANIFEST), None)
    if found is None:
        raise refused(f"The skill has no {MANIFEST} at its top (the manifest naming and describing it).", param,
                      "missing_skill_manifest")
    name, description = manifest(found.data, param)
    return SkillBundle(name, description, tuple(sorted(listed, key=lambda file: file.path)))


def _entry_kind(info: zipfile.ZipInfo) -> str:
    mode = info.external_attr >> 16
    if info.create_system == 3 and stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "link" if stat.S_ISLNK(mode) else "special"
    return "dir" if info.is_dir() else "file"


def _directory(data: bytes) -> tuple[int, int] | None:
    """(entries, bytes) of the zip's central directory as its end record (or the ZIP64 one) declares them; None
    when there is no end record (zipfile then refuses the data)."""
    at = data.rfind(b"PK\x05\x06", max(0, len(data) - 22 - 0xFFFF))
    if at < 0 or len(data) < at + 22:
        return None
    entries, size = struct.unpack_from("<HI", data, at + 10)
    if (entries == 0xFFFF or size == 0xFFFFFFFF) and at >= 20 and data[at - 20:at - 16] == b"PK\x06\x07":
        record = struct.unpack_from("<Q", data, at - 12)[0]
        if record + 56 <= len(data) and data[record:record + 4] == b"PK\x06\x06":
            entries, size = struct.unpack_from("<QQ", data, record + 32)
    return int(entries), int(size)


def read_zip(data: bytes, param: str = "files") -> SkillBundle:
    """A skill from one zip: its central directory bounded before zipfile parses it, every entry checked on what
    it declares before any is inflated, then inflated with its declared size as the cap."""
    return bundle(zip_files(data, param), param)


def zip_files(data: bytes, param: str = "files") -> list[SkillFile]:
    """The files of a zip read as a skill's are (:func:`read_zip`), bounded alike, before any skill is made of them
    (a plugin's zip holds several: services/agents/environments/plugins.py)."""
    if len(data) > MAX_ZIP_BYTES:
        raise refused(f"A skill's zip may be at most {MAX_ZIP_BYTES} bytes.", param)
    declared_directory = _directory(data)
    if declared_directory is not None and (declared_directory[0] > MAX_FILES * 2
                                           or declared_directory[1] > MAX_DIRECTORY_BYTES):
        raise refused(f"A skill may hold at most {MAX_FILES} files (the zip declares {declared_directory[0]} "
                      "entries).", param)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError) as error:
        raise refused(f"The skill's zip cannot be read: {str(error)[:200]}.", param, "invalid_zip") from None
    with archive:
        wanted = checked_entries(archive, param)
        return [SkillFile(path, _inflate(archive, info, param), bool((info.external_attr >> 16) & 0o111))
                for info, path in wanted]


def checked_entries(archive: zipfile.ZipFile, param: str = "files") -> list[tuple[zipfile.ZipInfo, str]]:
    """The zip's file entries and their checked paths, judged on what they declare before any is inflated:
    count, kinds, paths, encryption, each size, the total and the compression ratio (400s naming ``param``)."""
    entries = archive.infolist()
    if len(entries) > MAX_FILES * 2:  # directories have entries too
        raise refused(f"A skill may hold at most {MAX_FILES} files ({len(entries)} zip entries sent).", param)
    declared = 0
    wanted: list[tuple[zipfile.ZipInfo, str]] = []
    for info in entries:
        if info.filename.startswith(IGNORED_TOPS):
            continue
        kind = _entry_kind(info)
        if kind == "link":
            raise refused(f"The skill's zip holds a symbolic link ({info.filename[:200]!r}): only regular "
                          "files are accepted.", param)
        if kind == "special":
            raise refused(f"The skill's zip holds an entry that is not a regular file ({info.filename[:200]!r}).",
                          param)
        path = check_path(info.filename, param)
        if kind == "dir":
            continue
        if info.flag_bits & 0x1:
            raise refused(f"The skill's zip entry {info.filename[:200]!r} is encrypted.", param)
        if info.file_size > MAX_FILE_BYTES:
            raise refused(f"A skill file may be at most {MAX_FILE_BYTES} bytes ({info.filename[:200]!r} "
                          f"declares {info.file_size}).", param)
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise refused(f"The skill's zip entry {info.filename[:200]!r} inflates more than {MAX_RATIO} times: "
                          "refused as a zip bomb.", param)
        declared += info.file_size
        if declared > MAX_TOTAL_BYTES:
            raise refused(f"A skill's files may hold at most {MAX_TOTAL_BYTES} bytes together (uncompressed).",
                          param)
        wanted.append((info, path))
    if len(wanted) > MAX_FILES:
        raise refused(f"A skill may hold at most {MAX_FILES} files ({len(wanted)} sent).", param)
    return wanted


def _inflate(archive: zipfile.ZipFile, info: zipfile.ZipInfo, param: str) -> bytes:
    out = bytearray()
    inflate_into(archive, info, out.extend, param)
    return bytes(out)


def inflate_into(archive: zipfile.ZipFile, info: zipfile.ZipInfo, write: Callable[[bytes], object],
                 param: str = "files") -> None:
    """Inflate one entry into ``write``, chunk by chunk, with its declared size as a hard cap: an entry holding
    more or other than it declares is refused (zipfile checks the CRC at its end)."""
    seen = 0
    try:
        with archive.open(info) as entry:
            while chunk := entry.read(READ_CHUNK):
                seen += len(chunk)
                if seen > info.file_size:
                    raise refused(f"The skill's zip entry {info.filename[:200]!r} holds more than it declares.",
                                  param)
                write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError, RuntimeError,
            OSError) as error:
        raise refused(f"The skill's zip entry {info.filename[:200]!r} cannot be read: {str(error)[:200]}.",
                      param, "invalid_zip") from None
    if seen != info.file_size:
        raise refused(f"The skill's zip entry {info.filename[:200]!r} holds other than it declares.", param,
                      "invalid_zip")


def canonical_zip(skill: SkillBundle) -> bytes:
    """The zip the bridge keeps and serves: the skill's files at their paths, regular files only, fixed modes and
    times (the same files make the same bytes)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for file in skill.files:
            info = zipfile.ZipInfo(file.path, date_time=(1980, 1, 1, 0, 0, 0))
            info.create_system = 3
            info.external_attr = (stat.S_IFREG | (0o755 if file.executable else 0o644)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, file.data)
    return out.getvalue()
