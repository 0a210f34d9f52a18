"""Why an optional extra cannot be imported: not installed, or installed and broken.

Each extra (``otel``, ``postgres``, ``retrieval``, ``programs``, ``agent-sandbox``) is imported lazily, and a
failed import used to be answered with "not installed: pip install 'responses-bridge[...]'". When the extra *is*
installed and its import fails anyway (a package that overwrote another's files, a wheel built for another
Python, a missing system library), that line sends the user to install what is already there. So the line is
chosen by what is on disk, not by the exception: the install line only when one of the extra's distributions is
really absent (importlib.metadata, which imports nothing), and otherwise the import that failed with its error.
Only failure paths come here: nothing of this runs while the extras import.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re

import structlog
from packaging.requirements import InvalidRequirement, Requirement

PROJECT = "responses-bridge"
_PATH = re.compile(r" \((?:/|[A-Za-z]:\\)[^)]*\)")
"""The file path an ImportError's message ends with (``... from 'x' (/venv/lib/.../x.py)``)."""

log = structlog.get_logger("responses_bridge.extras")


def install_command(extra: str) -> str:
    return f"pip install '{PROJECT}[{extra}]'"


def extra_distributions(extra: str) -> list[str]:
    """The distributions the installed ``responses-bridge`` names for ``extra`` (its ``Requires-Dist`` lines with
    ``extra == "<extra>"``); empty when the project's own metadata is not installed (a bare source tree)."""
    try:
        requires = importlib.metadata.requires(PROJECT) or []
    except importlib.metadata.PackageNotFoundError:
        return []
    names: list[str] = []
    for line in requires:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if requirement.marker is None or requirement.name == PROJECT:
            continue
        if requirement.marker.evaluate({"extra": extra}) and not requirement.marker.evaluate({"extra": ""}):
            names.append(requirement.name)
    return names


def missing_distributions(extra: str, error: ImportError | None = None) -> list[str]:
    """The distributions of ``extra`` that are not installed. Without the project's metadata to read, a module
    that cannot be found at all (``error``'s top-level package) stands for the missing distribution."""
    names = extra_distributions(extra)
    if names:
        missing = []
        for name in names:
            try:
                importlib.metadata.distribution(name)
            except importlib.metadata.PackageNotFoundError:
                missing.append(name)
        return missing
    if isinstance(error, ModuleNotFoundError) and error.name:
        top = error.name.partition(".")[0]
        try:
            absent = importlib.util.find_spec(top) is None
        except (ImportError, ValueError):
            absent = False
        return [top] if absent else []
    return []


def import_failed(attempted: str, error: BaseException, *, public: bool = False) -> str:
    """The one line for an installed extra whose import failed: what was imported, and the error as raised
    (``public``: without the file paths an ImportError's message may end with, for an API answer)."""
    inner = getattr(error, "name", None)
    where = f" (in {inner})" if inner and inner != attempted else ""
    message = _PATH.sub("", str(error)) if public else str(error)
    return f"importing {attempted} failed{where}: {type(error).__name__}: {message}"


def explain(extra: str, attempted: str, error: ImportError, not_installed: str, *, public: bool = False) -> str:
    """``not_installed`` (the caller's install line) when a distribution of ``extra`` is absent, naming which;
    otherwise the installed extra's failed import (:func:`import_failed`). A ``public`` line goes into an API
    answer: the full one, paths and all, is logged for the operator."""
    missing = missing_distributions(extra, error)
    if missing:
        return f"{not_installed} (not installed: {', '.join(missing)})"
    if public:
        log.warning("extra_import_failed", extra=extra, error=import_failed(attempted, error))
    return f"the {extra} extra is installed, but {import_failed(attempted, error, public=public)}"
