"""The client's own ``Authorization``, kept sealed with a run whose upstream call carries it, so that another process
(the next start on SQLite, another replica on PostgreSQL) can make the run's model call again.

Why: with no upstream key configured the client's ``Authorization`` is what goes upstream, and every openai SDK
client sends one (any key, even for a vLLM or Ollama that asks for none). A run that held it in memory only could
not be resumed after its process stopped, so the most common self-hosted deployment had no durable session turn
nor background response at all, silently. Kept, it is sealed as the vaults' secrets are (``sealing.py``: AES-GCM
under the deployment's sealing key, its own purpose as associated data, so the blob opens as nothing else), lives
in the run's durable state only while the run runs, and is erased with the run's end (completed, failed,
cancelled). It is never logged, and never in any answer: it sits beside the run's other private state.

Which key seals it: ``RESPONSES_BRIDGE_SEALING_KEY`` when configured; otherwise the key every replica on one
PostgreSQL database agrees on (stored in that database), or on SQLite the ``sealing.key`` file beside the database.
Either way every process that can resume the run can open it.

Kept only where it is forwarded: a route with a configured key sends its own, so nothing of the client's is kept
for it. ``RESPONSES_BRIDGE_DURABLE_CLIENT_CREDENTIALS=false`` keeps nothing: such runs are not resumed after a stop
(they fail saying why), and ``serve`` says so at start.
"""

from __future__ import annotations

from collections.abc import Callable

from ...protocol.errors import APIError
from ...sealing import Sealer

PURPOSE = "client-authorization"
"""The sealed blob's purpose (its associated data): a kept credential opens as nothing else, nothing else as it."""

Forwarded = Callable[["str | None", str], bool]
"""Does the client's ``Authorization`` (second) go upstream for a request of this model (first)? The runtime knows
(the routes and their keys)."""


class KeptAuthorization:
    """Seals and opens the client's ``Authorization`` kept with a run; ``enabled=False``: nothing is kept."""

    def __init__(self, sealer: Sealer, *, enabled: bool = True, forwarded: Forwarded | None = None) -> None:
        self.sealer = sealer
        self.enabled = enabled
        self._forwarded = forwarded

    def seal(self, authorization: str | None, model: str | None = None) -> str | None:
        """The blob to keep with the run, or None: nothing to keep (no header, keeping turned off, or the model's
        upstream gets a configured key instead of the client's)."""
        if not authorization or (self._forwarded is not None and not self._forwarded(model, authorization)):
            return None
        return self.keep(authorization)

    def keep(self, authorization: str | None) -> str | None:
        """:meth:`seal` for a caller that knows the header goes upstream (a background run's door decided so)."""
        if not self.enabled or not authorization:
            return None
        return self.sealer.seal(PURPOSE, authorization)

    def open(self, sealed: object) -> str | None:
        """The kept ``Authorization``; None when none was kept, or it cannot be opened (another deployment's key, a
        damaged value): the caller then treats the run as one whose credentials were not kept."""
        if not isinstance(sealed, str):
            return None
        try:
            value = self.sealer.open(PURPOSE, sealed)
        except APIError:
            return None
        return value if isinstance(value, str) else None
