"""The bridge's scratch trees on the host (sandbox/scratch.py, trees.py, read_only.py): made under a directory of
its own, never directly in the system's temporary directory; removed by directory descriptor, so a directory
swapped for a link mid-walk is never followed; swept at start only where they are the bridge's own uid's."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from responses_bridge.sandbox import trees
from responses_bridge.sandbox.read_only import PREFIX, sweep_orphans
from responses_bridge.sandbox.scratch import ScratchUnsafe, scratch_root
from responses_bridge.sandbox.trees import STALE_PREFIX, remove_tree, sweep_stale

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="another uid's directory can only be made as root")
OTHER_UID = 12345


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def _victim(where: Path) -> Path:
    """A directory of files the walk must never touch: mode 0755, two files."""
    victim = where / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("kept")
    (victim / "inner").mkdir()
    (victim / "inner" / "also.txt").write_text("kept too")
    victim.chmod(0o755)
    return victim


def _intact(victim: Path) -> bool:
    return ((victim / "keep.txt").read_text() == "kept" and (victim / "inner" / "also.txt").read_text() == "kept too"
            and stat.S_IMODE(victim.stat().st_mode) == 0o755)


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(done.stdout)


def test_a_directory_swapped_for_a_link_mid_walk_is_never_followed(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    victim = _victim(tmp_path)
    tree = tmp_path / "tree"
    (tree / "a" / "sub" / "deeper").mkdir(parents=True)
    (tree / "a" / "sub" / "deeper" / "f").write_text("x")
    (tree / "planted").symlink_to(victim)  # a link made before the walk: removed as a link
    real_scandir = os.scandir
    swapped: list[bool] = []

    class Listed(list[Any]):
        def __enter__(self) -> Listed:
            return self

        def __exit__(self, *_: object) -> None:
            pass

    def scandir_then_swap(where: Any = ".") -> Listed:
        """Lists, then (the race) swaps ``a/sub``, just listed as a directory, for a link to the victim before
        the walk enters it."""
        with real_scandir(where) as entries:
            listed = Listed(entries)
        if not swapped and any(entry.name == "sub" for entry in listed):
            swapped.append(True)
            if isinstance(where, int):  # listed by descriptor: the swap is made in that very directory
                os.rename("sub", tmp_path / "moved-away", src_dir_fd=where)
                os.symlink(victim, "sub", dir_fd=where)
            else:
                os.rename(Path(where, "sub"), tmp_path / "moved-away")
                Path(where, "sub").symlink_to(victim)
        return listed

    monkeypatch.setattr(os, "scandir", scandir_then_swap)
    assert remove_tree(tree)
    monkeypatch.undo()
    assert swapped and not tree.exists()
    assert _intact(victim)  # neither chmod nor unlink reached through the link
    assert sorted(path.name for path in tmp_path.iterdir()) == ["moved-away", "victim"]


def test_a_link_named_like_a_stale_tree_is_not_followed(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    (tmp_path / f"{STALE_PREFIX}planted").symlink_to(victim)
    assert sweep_stale(tmp_path) == 0
    assert _intact(victim) and (tmp_path / f"{STALE_PREFIX}planted").is_symlink()


@as_root
def test_a_directory_another_uid_planted_is_left_alone_by_both_sweeps(tmp_path: Path) -> None:
    planted = [tmp_path / f"{STALE_PREFIX}planted", tmp_path / f"{PREFIX}{_dead_pid()}-planted"]
    for directory in planted:
        (directory / "sub").mkdir(parents=True)
        (directory / "sub" / "file").write_text("theirs")
        for path in (directory, directory / "sub", directory / "sub" / "file"):
            os.chown(path, OTHER_UID, OTHER_UID)
    assert sweep_stale(tmp_path) == 0
    assert sweep_orphans(tmp_path) == 0
    for directory in planted:
        assert (directory / "sub" / "file").read_text() == "theirs"
        assert directory.stat().st_uid == OTHER_UID


def test_the_bridge_s_own_stale_trees_still_go_in_both_places(tmp_path: Path) -> None:
    dead = _dead_pid()
    legacy = tmp_path / f"{PREFIX}{dead}-old"
    scratch = scratch_root(tmp_path) / f"{PREFIX}{dead}-new"
    live = scratch_root(tmp_path) / f"{PREFIX}{os.getpid()}-mine"
    for directory in (legacy, scratch, live):
        (directory / "tool").mkdir(parents=True)
        (directory / "tool" / "SKILL.md").write_text("x")
    assert sweep_orphans(tmp_path) == 2
    assert not legacy.exists() and not scratch.exists() and live.exists()


def test_the_scratch_directory_is_the_bridge_s_own_whatever_the_umask(tmp_path: Path, umask_022: None) -> None:
    root = scratch_root(tmp_path)
    assert root == tmp_path / f"responses-bridge-{os.geteuid()}"
    info = os.lstat(root)
    assert info.st_uid == os.geteuid()
    assert stat.S_IMODE(info.st_mode) == (0o711 if os.geteuid() == 0 else 0o700)  # passed through, never listed


def test_a_scratch_root_whose_parent_is_missing_is_named(tmp_path: Path) -> None:
    with pytest.raises(ScratchUnsafe, match="cannot be made: No such file or directory"):
        scratch_root(tmp_path / "missing")


def test_removal_holds_a_few_descriptors_however_deep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = tmp_path / "deep"
    tree.mkdir()
    level = os.open(tree, os.O_RDONLY)
    for _ in range(2000):
        os.mkdir("d", 0o500, dir_fd=level)  # read-only, as code may leave them
        deeper = os.open("d", os.O_RDONLY, dir_fd=level)
        os.close(level)
        level = deeper
    os.close(level)
    real_open, real_close = os.open, os.close
    held: set[int] = set()
    most = [0]

    def counted_open(*args: Any, **kwargs: Any) -> int:
        fd = real_open(*args, **kwargs)
        held.add(fd)
        most[0] = max(most[0], len(held))
        return fd

    def counted_close(fd: int) -> None:
        held.discard(fd)
        real_close(fd)

    monkeypatch.setattr(trees.os, "open", counted_open)
    monkeypatch.setattr(trees.os, "close", counted_close)
    assert remove_tree(tree)
    monkeypatch.undo()
    assert not tree.exists() and list(tmp_path.iterdir()) == []
    assert 0 < most[0] <= 4
