"""The installed trees of ``responses-bridge bench --ab-tree``: each side's sidecar runs from a wheel of its tree
installed into a venv of its own, never from a source checkout.

An editable install (or a tree's ``src`` first on ``PYTHONPATH``) imports from the checkout, with its own import
path and byte-code cache; comparing one tree run that way with another run installed would measure the two ways as
much as the two trees. So both trees are installed alike: the tree's ``pyproject.toml``, ``README.md``, ``src`` and
``build_backend`` (its build backend, where the tree has one) are copied to a scratch directory (the build writes
``build/`` and ``*.egg-info`` there, not in the checkout) and ``pip install --no-deps`` puts the wheel into a fresh
venv. The venv takes its dependencies from the running benchmark's venv through a ``.pth`` file naming its
site-packages as a plain path: a path line, unlike a site directory, does not run that venv's own ``.pth`` files,
so its editable ``responses_bridge`` stays out of sight. Installing checks that the venv imports the bridge from
its own site-packages.

The venvs are kept under the user's cache directory by a hash of what was installed (all of it, file by file), so a
second run of the same trees starts at once, and a tree edited since is installed again.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import site
import subprocess
import sys
import tempfile
from pathlib import Path

import platformdirs

_COPIED = ("pyproject.toml", "README.md")
_COPIED_TREES = ("src", "build_backend")  # a tree from before its build backend has none
_DONE = ".bench-installed"


def tree_digest(tree: Path) -> str:
    """A hash of what installing ``tree`` reads: its pyproject.toml, README.md and every file under src/ and
    build_backend/."""
    digest = hashlib.sha256()
    files = [tree / name for name in _COPIED if (tree / name).is_file()]
    files += sorted(path for folder in _COPIED_TREES for path in (tree / folder).rglob("*")
                    if path.is_file() and "__pycache__" not in path.parts and ".egg-info" not in str(path))
    for path in files:
        digest.update(str(path.relative_to(tree)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:20]


def installed_python(tree: Path, log: bool = True) -> Path:
    """The interpreter of a venv holding ``tree`` installed (not editable), made once per tree digest."""
    tree = tree.resolve()
    venv = Path(platformdirs.user_cache_dir("responses-bridge"), "bench-ab", tree_digest(tree))
    python = venv / "bin" / "python"
    if (venv / _DONE).is_file():
        _see_dependencies(python)  # the venv that made it may be gone: the running one's, each time
        return python
    if log:
        print(f"bench A/B: installing {tree} into {venv}", file=sys.stderr, flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    with tempfile.TemporaryDirectory(prefix="rb-bench-tree-") as scratch:
        for name in _COPIED:
            if (tree / name).is_file():
                shutil.copy2(tree / name, Path(scratch, name))
        for folder in _COPIED_TREES:
            if (tree / folder).is_dir():
                shutil.copytree(tree / folder, Path(scratch, folder),
                                ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                        scratch], check=True)
    # after the install: with the running venv in sight, pip would take its editable bridge for the one to replace
    own = _see_dependencies(python)
    _add_missing(python)
    where = subprocess.run([str(python), "-c", "import responses_bridge; print(responses_bridge.__file__)"],
                           capture_output=True, text=True, check=True).stdout.strip()
    if not Path(where).is_relative_to(own):
        raise SystemExit(f"responses-bridge bench: {venv} imports the bridge from {where}, not its own install")
    (venv / _DONE).write_text(f"{tree}\n")
    return python


def _see_dependencies(python: Path) -> Path:
    """Point ``python``'s venv at the running benchmark's site-packages for its dependencies; its own
    site-packages."""
    own = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                              capture_output=True, text=True, check=True).stdout.strip())
    (own / "_bench_deps.pth").write_text("".join(f"{path}\n" for path in site.getsitepackages()))
    return own


def _add_missing(python: Path) -> None:
    """Install into ``python``'s venv what its tree requires and the running venv lacks (an older tree's own
    dependencies: ee3dbcf's xds-protos), as ``pip check`` names them."""
    check = subprocess.run([str(python), "-m", "pip", "check", "--disable-pip-version-check"], capture_output=True,
                           text=True)
    missing = re.findall(r"^responses-bridge \S+ requires ([A-Za-z0-9_.\-]+), which is not installed", check.stdout,
                         re.M)
    if missing:
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                        *sorted(set(missing))], check=True)
