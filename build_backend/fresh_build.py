"""The project's build backend: setuptools' own, every hook as it is, but a wheel is built from an emptied
``build/lib``.

setuptools copies the packages into ``build/lib`` and packs the wheel from there, and never removes what an earlier
build left in it; pip builds a local directory in place. So ``pip install <checkout>`` in a checkout built once
before, then moved on, installed the modules since moved or deleted beside the new ones (a checkout built before
the capability folders gave a wheel with 146 files of the old layout). pyproject.toml names this module
(``backend-path``); the Dockerfile and the sdist carry it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from setuptools import build_meta
from setuptools.build_meta import *  # noqa: F403 -- every other hook, setuptools' own

SCRATCH = Path("build") / "lib"
"""Where setuptools' build_py puts the packages it packs (relative to the project: PEP 517 runs hooks there)."""


def build_wheel(wheel_directory: str, config_settings: dict[str, Any] | None = None,
                metadata_directory: str | None = None) -> str:
    shutil.rmtree(SCRATCH, ignore_errors=True)
    return build_meta.build_wheel(wheel_directory, config_settings, metadata_directory)
