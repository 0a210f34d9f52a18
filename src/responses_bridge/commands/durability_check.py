"""What ``serve`` says at start about durable runs: whether a background response or an Agents session turn
outlives its process (resumed by the next start, or by another replica), and when it does not, why.

A run's durability hangs on its upstream credentials: a run whose call carries a configured upstream key is made
again with that key; one whose call carries the client's own ``Authorization`` (no key configured for its upstream:
the usual vLLM or Ollama deployment, where every openai SDK client still sends one) is durable only while that
header is kept with it, sealed (services/responses/kept_authorization.py), which
``RESPONSES_BRIDGE_DURABLE_CLIENT_CREDENTIALS=false`` turns off. An operator who turned it off, or who finds runs
failing after a restart, reads the reason on the first lines of the log rather than in a failed run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..sealing import KEY_SETTING

if TYPE_CHECKING:
    from ..config.settings import Settings
    from ..runtime import Runtime

_PROBE = "Bearer durability-probe"  # a header to ask the routes whether the client's own goes upstream
OPT_OUT = "RESPONSES_BRIDGE_DURABLE_CLIENT_CREDENTIALS"


@dataclass(frozen=True)
class Durability:
    """What the start-up line says: durable, and what becomes of the client's header; or not, and why."""

    durable: bool
    client_header: str | None = None
    sealed_with: str | None = None
    reason: str | None = None
    hint: str | None = None


def forwarding_upstreams(settings: Settings, runtime: Runtime) -> list[str]:
    """The upstreams the client's own ``Authorization`` goes to (none configured with a key of its own)."""
    if settings.auth == "keys":  # the client's Authorization is its key to the bridge: never forwarded
        return []
    if not runtime.clients:
        return ["upstream"] if runtime.upstream_authorization(_PROBE) == _PROBE else []
    router = runtime.routes()
    return [name for name, spec in router.upstreams.items() if router.authorization(spec, _PROBE) == _PROBE]


def sealing_key_source(settings: Settings) -> str:
    """Where the key that seals kept credentials comes from: every process that may resume a run holds it."""
    if settings.sealing_key:
        return KEY_SETTING
    if settings.database_url is not None:
        return "the database (one key every replica on it shares)"
    return "sealing.key beside the database"


def durability(settings: Settings, runtime: Runtime) -> Durability:
    """Are the runs durable, and on what (or why not)?"""
    if settings.db_path() == ":memory:" and settings.database_url is None:
        return Durability(False, reason="the store is in memory: nothing outlives the process")
    forwarding = forwarding_upstreams(settings, runtime)
    if not forwarding:
        return Durability(True, client_header="not forwarded: every upstream call carries a configured key")
    if not runtime.kept_authorization.enabled:
        return Durability(
            False, reason=(f"{OPT_OUT}=false: a run whose upstream call carries the client's own Authorization (no "
                           f"key configured for: {', '.join(forwarding)}) is not kept with it, so it fails after "
                           "its process stops instead of resuming"),
            hint=f"configure the upstream key, or leave {OPT_OUT} on to keep it sealed with the run")
    return Durability(True, client_header=(f"kept sealed with each run whose call carries it (to: "
                                           f"{', '.join(forwarding)}), erased at the run's end"),
                      sealed_with=sealing_key_source(settings))


def log_durability(settings: Settings, runtime: Runtime, log: Any) -> Durability:
    """One line at start: ``runs_durable``, or the warning ``runs_not_durable`` saying why."""
    said = durability(settings, runtime)
    if said.durable:
        log.info("runs_durable", client_header=said.client_header, sealed_with=said.sealed_with)
    else:
        log.warning("runs_not_durable", reason=said.reason, hint=said.hint)
    return said
