"""What serves one line of a batch: the seam between the runner (runner.py) and the door whose route code answers
the line's endpoint (adapters/http/batches/line_server.py). The service knows no route; the door knows no batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class LineAnswer:
    """The endpoint's answer to a line: its status, its JSON body (an OpenAI error object when refused), and the
    request id it was served under."""

    status: int
    body: bytes
    request_id: str


class LineServer(Protocol):
    """Serves a line's body as its endpoint's route serves a request: the same translation, tools, storage and
    upstream, as ``tenant``, with ``authorization`` the line's batch was created with (what goes upstream where the
    route would send the client's own)."""

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The batch endpoints served (``/v1/responses``, ``/v1/chat/completions``, ``/v1/embeddings`` …)."""

    def forwards_authorization(self, endpoint: str) -> bool:
        """Whether a line of ``endpoint`` may send the client's own ``Authorization`` upstream (no key configured):
        then the batch keeps it, sealed, for the process that runs it."""

    async def serve(self, endpoint: str, body: bytes, *, tenant: str, authorization: str | None) -> LineAnswer:
        """The answer; never raises for the line's own failures (they are its answer)."""
