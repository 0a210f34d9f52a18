"""Path lookups held warm in the cgroup v2 VM (tests/deploy/test_oci_runtime.py): the scenario there holds a
reference to every directory and file its Python processes' imports read, for as long as it runs.

Why: the VM sees this machine's ``/`` over 9p without caching (run-in-vm mounts it so), and such a mount keeps no
dentry that nothing references: every ``stat`` or ``open`` walks each component of its path over the share again,
~3 ms a lookup under software emulation, three or four lookups for each of the ~1,000 modules a ``serve`` imports.
A held ``O_PATH`` descriptor keeps its dentry (and its ancestors') in the guest's cache, and a lookup under it
resolves there; the containers see the same dentries through their rbind of ``/``. Importing what ``serve``
imports in the VM: 29–31 s cold, 15–18 s with these held (~1.3 s to take them).

The host, where lookups are cheap, lists them (:func:`read_by_imports`, after importing what the containers
import); the list travels in the scenario's environment, compressed (~2,000 paths, ~12 KB): the VM shares no
writable place with the test but the checkout, which the test leaves as it is. ``python -m tests.support.vm_lookups
MODULE ARG...`` takes them, then runs MODULE as ``python -m MODULE ARG...`` would: its own imports (~270 modules for
the scenario) find them held.

    python -m tests.support.vm_lookups MODULE [ARG...]
"""

from __future__ import annotations

import base64
import json
import os
import resource
import runpy
import sys
import zlib

VARIABLE = "SCENARIO_HELD_LOOKUPS"
SPARE_DESCRIPTORS = 1024
"""Left free for what the scenario itself opens (its pipes, sockets and files)."""


def read_by_imports() -> str:
    """What this interpreter has read to import what it has (each module's source and bytecode, the shared objects
    mapped, the import path's directories), with their directories, encoded for :data:`VARIABLE`."""
    files = set()  # the interpreter's own binary among the mapped files below
    for module in list(sys.modules.values()):
        for attribute in ("__file__", "__cached__"):
            path = getattr(module, attribute, None)
            if isinstance(path, str) and os.path.isfile(path):
                files.add(os.path.abspath(path))
    with open("/proc/self/maps") as maps:
        files.update(fields[5] for fields in (line.split() for line in maps)
                     if len(fields) >= 6 and fields[5].startswith("/") and os.path.isfile(fields[5]))
    by_directory: dict[str, list[str]] = {os.path.abspath(entry): [] for entry in sys.path if os.path.isdir(entry)}
    for path in sorted(files):
        by_directory.setdefault(os.path.dirname(path), []).append(os.path.basename(path))
    return base64.b64encode(zlib.compress(json.dumps(by_directory, separators=(",", ":")).encode(), 9)).decode()


def hold(encoded: str) -> list[int]:
    """``O_PATH`` descriptors of every directory (ancestors first) and file :func:`read_by_imports` listed that
    exists here, open until the process ends (or the caller closes them): as many as the descriptor limit, raised
    to fit them, holds beside :data:`SPARE_DESCRIPTORS`."""
    by_directory: dict[str, list[str]] = json.loads(zlib.decompress(base64.b64decode(encoded)))
    directories = set()
    for directory in by_directory:
        while directory not in directories and directory != "/":
            directories.add(directory)
            directory = os.path.dirname(directory)
    paths = sorted(directories) + [os.path.join(directory, name)
                                   for directory, names in by_directory.items() for name in names]
    limit = _raise_descriptor_limit(len(paths) + SPARE_DESCRIPTORS)
    held = []
    for path in paths[:max(0, limit - SPARE_DESCRIPTORS)]:
        try:
            held.append(os.open(path, os.O_PATH))  # not inherited by what the scenario starts (PEP 446)
        except OSError:  # gone or not reachable: its lookups walk the share, as without this
            continue
    return held


def _raise_descriptor_limit(wanted: int) -> int:
    """The soft descriptor limit raised to ``wanted`` (the hard one too, as root in the VM), or as far as it goes."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return wanted
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(wanted, hard) if hard != resource.RLIM_INFINITY
                                                    else hard))
        return wanted
    except (OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard


def main() -> None:
    """Hold what :data:`VARIABLE` lists, then run the module ``sys.argv[1]`` names as ``__main__``."""
    hold(os.environ[VARIABLE])
    del sys.argv[0]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
