"""Environment variables that look like the bridge's but that no setting reads: each one said, never ignored in silence.

pydantic-settings reads the variables it knows and passes over every other, so ``RESPONSES_BRIDGE_UPSTREM=…`` (or
``RESPONSE_BRIDGE_HTTP_PORT=…``, the prefix itself mistyped) leaves the default in force, and the default upstream
is the fake model's port, which may well answer. This is the one check of those names, run by ``cli.main`` before
every command that reads settings: a variable whose name starts with ``RESPONSES_BRIDGE_`` (in any case, as
pydantic-settings reads them) or with a near miss of it, and that no setting or part of the bridge reads, is a
warning naming the closest known name, or, with ``--strict-env`` (``RESPONSES_BRIDGE_STRICT_ENV=1``), the one-line
error of a configuration mistake.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping

from ..config.file import CONFIG_ENV
from ..config.settings import Settings, SettingsError, env_names
from ..process.drain_barrier import DRAIN_DIR_ENV
from ..process.workers import WORKER_ENV

PREFIX = "RESPONSES_BRIDGE_"
STRICT_ENV = "RESPONSES_BRIDGE_STRICT_ENV"
TOOLING_NAMES = frozenset({"RESPONSES_BRIDGE_TEST_STORE", "RESPONSES_BRIDGE_TEST_WORKERS",
                           "RESPONSES_BRIDGE_TEST_PG_WORKERS", "RESPONSES_BRIDGE_VENV",
                           "RESPONSES_BRIDGE_SKIP_BWRAP_INSTALL", "RESPONSES_BRIDGE_SKIP_DESKTOP_INSTALL",
                           "RESPONSES_BRIDGE_REAL_MODEL_DIR",
                           "RESPONSES_BRIDGE_TEST_FORK", "RESPONSES_BRIDGE_PIP"})
"""Read by the development scripts (scripts/test, scripts/demo, .ci/run, scripts/real-model-session), which may run
the bridge with them set."""
# Read by the bridge, or by its development scripts, without being a setting
OTHER_NAMES = frozenset({CONFIG_ENV, WORKER_ENV, STRICT_ENV, DRAIN_DIR_ENV}) | TOOLING_NAMES
NEAR_PREFIX = 0.8
"""How alike the start of a name must be to ``RESPONSES_BRIDGE_`` to be taken for a mistyped prefix (difflib's
ratio: ``RESPONSE_BRIDGE_`` 0.97, ``RESPONSES_BRIGDE_`` 0.94, the ``RESPONSES_API_`` of ``RESPONSES_API_URL`` 0.77)."""
CLOSE_NAME = 0.6


def known_names() -> frozenset[str]:
    """Every variable name the bridge reads that starts with its prefix: the settings' and :data:`OTHER_NAMES`."""
    names = {name.upper() for field in Settings.model_fields for name in env_names(field)}
    return frozenset(name for name in names | OTHER_NAMES if name.startswith(PREFIX))


def _split(name: str) -> tuple[str, str]:
    """(what stands for the prefix, the rest): the cut where the start of ``name`` is likest ``RESPONSES_BRIDGE_``,
    so ``RESPONSE_BRIDGE_HTTP_PORT`` is (``RESPONSE_BRIDGE_``, ``HTTP_PORT``)."""
    upper = name.upper()
    if upper.startswith(PREFIX):
        return PREFIX, upper[len(PREFIX):]
    cut = max(range(len(PREFIX) - 3, len(PREFIX) + 3),
              key=lambda at: difflib.SequenceMatcher(None, upper[:at], PREFIX).ratio())
    return upper[:cut], upper[cut:]


def looks_like_ours(name: str) -> bool:
    """Does ``name`` start with the bridge's prefix, or with something a keystroke or two from it?"""
    start, _ = _split(name)
    return start == PREFIX or difflib.SequenceMatcher(None, start, PREFIX).ratio() >= NEAR_PREFIX


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[tuple[str, str | None]]:
    """(the variable, the closest known name or None) for each variable of ``environ`` (the process's by default)
    that looks like the bridge's but that nothing reads, sorted by name. Closeness is judged on the part after the
    prefix, which every known name shares."""
    environ = os.environ if environ is None else environ
    known = known_names()
    rests = sorted(name[len(PREFIX):] for name in known)
    found = []
    for name in sorted(environ):
        if looks_like_ours(name) and name.upper() not in known:
            close = difflib.get_close_matches(_split(name)[1], rests, n=1, cutoff=CLOSE_NAME)
            found.append((name, PREFIX + close[0] if close else None))
    return found


def describe(name: str, closest: str | None, *, ignored: bool = True) -> str:
    hint = f"did you mean {closest}?" if closest else "the settings are listed by `responses-bridge serve --help`"
    return f"{name} is not a setting{', and is ignored' if ignored else ''}; {hint}"


def strict_from_environment(environ: Mapping[str, str] | None = None) -> bool:
    value = (os.environ if environ is None else environ).get(STRICT_ENV, "")
    return value.strip().lower() in ("1", "true", "yes", "on")


def check_environment(strict: bool, environ: Mapping[str, str] | None = None) -> list[str]:
    """The warnings to print, one line each; with ``strict`` (or ``RESPONSES_BRIDGE_STRICT_ENV``) a
    :class:`SettingsError` naming every such variable instead. A worker of ``serve --workers`` says nothing: its
    supervisor, started in the same environment, has said it."""
    environ = os.environ if environ is None else environ
    if WORKER_ENV in environ:
        return []
    found = unknown_variables(environ)
    if found and (strict or strict_from_environment(environ)):
        raise SettingsError("; ".join(describe(name, closest, ignored=False) for name, closest in found)
                            + f" (--strict-env / {STRICT_ENV})")
    return [describe(name, closest) for name, closest in found]
