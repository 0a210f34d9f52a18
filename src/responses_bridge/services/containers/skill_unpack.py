"""A kept skill laid out on the host's disk, streamed: the zip read from its file, each entry inflated chunk by
chunk straight into its file, so unpacking a skill holds a chunk of it in memory, never the zip or its files
(a 64 MiB skill read whole, zip and files, took ~130 MiB of the bridge's memory per skill being unpacked).

The zip is the bridge's own (skill_bundle.py's ``canonical_zip``, made at upload), but it is read back from a
store the bridge does not alone control, so every entry is checked again on what it declares before a byte is
inflated (skill_bundle.py's ``checked_entries``) and inflated with its declared size as the cap; files are written
0644 or 0755 whatever the zip says, each created exclusively and without following links.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from .skill_bundle import MANIFEST, checked_entries, inflate_into, refused


def unpack_kept(source: Path, root: Path) -> tuple[int, int]:
    """Write the skill whose zip is at ``source`` under ``root`` (which must not exist yet): how many files and
    bytes. Raises the skill checks' ``APIError`` for a zip that is not a skill the bridge would have kept."""
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as error:
        raise refused(f"The kept skill's zip cannot be read: {str(error)[:200]}.", code="invalid_zip") from None
    with archive:
        entries = checked_entries(archive)
        if MANIFEST not in {path for _, path in entries}:
            raise refused(f"The kept skill has no {MANIFEST} at its top.", code="missing_skill_manifest")
        root.mkdir(mode=0o755)
        os.chmod(root, 0o755)  # past the umask
        written = 0
        for info, path in entries:
            target = root / path
            _directories(root, target.parent)
            mode = 0o755 if (info.external_attr >> 16) & 0o111 else 0o644
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), mode)  # past the umask
                inflate_into(archive, info, handle.write)
            written += info.file_size
    return len(entries), written


def _directories(root: Path, directory: Path) -> None:
    """Make ``directory`` and its parents under ``root``, each 0755 past the umask; never through a link (a
    path of the skill is a directory or a file, never both: skill_bundle.py refused that at upload)."""
    missing: list[Path] = []
    while directory != root and not directory.is_dir():
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        os.mkdir(path, 0o755)
        os.chmod(path, 0o755)
