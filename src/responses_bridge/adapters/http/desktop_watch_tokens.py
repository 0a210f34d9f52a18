"""The credentials of watching a desktop from a browser, which cannot send ``Authorization`` on a page it is
linked to, an ``<img>`` or an ``<iframe>``: a short-lived token in the URL, minted by a request that carried the
tenant's key, never the key itself.

A token is sealed by the deployment's sealing key (sealing.py: AES-GCM, so it is neither readable nor forgeable
without the key, and replicas sharing the key accept each other's) and names its kind, the tenant, the session and
when it expires. Two kinds, so a token cannot outgrow what it was minted for:

- ``page``: opens ``…/desktop/live`` (the link of the session's ``desktop_live_url`` and ``responses-bridge
  desktop-url``), for ``desktop_watch_link_seconds``;
- ``view``: opens what that page shows, the frame stream (``…/desktop/frames``) and the calls beside it
  (``…/desktop/calls``), minted by the page as it is served. A view token ends with the page token that opened the
  page (its expiry is that token's, never later; a page opened with the tenant's key instead: the link's
  ``desktop_watch_link_seconds`` from then), and the calls list's refresh carries a new one that ends when the one
  it came with does: a refresh never makes a link outlive its expiry. A frame stream opened before then runs until
  its watcher leaves or the desktop stops (a stream is opened once; nothing of it is renewed).

The identity middleware (identity.py) resolves such a request's tenant from its token, as it resolves a key's.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Literal

from ...protocol.errors import APIError
from ...sealing import Sealer
from ...services.tenancy.identity import unauthenticated

PURPOSE = "desktop-watch"
Kind = Literal["page", "view"]
WATCH_PATH = re.compile(r"^(?:/v1)?/agents/sessions/([^/]+)/desktop/(live|frames|calls)$")
"""The paths a token opens: the session's id, and which of them (``live`` takes a page token, the others a view
token)."""
INVALID = ("This desktop link is not valid: it was altered, is for another session, or was made by another "
           "deployment. Get a new one from the session's desktop_live_url or `responses-bridge desktop-url`.")
EXPIRED = ("This desktop link has expired. Get a new one from the session's desktop_live_url or "
           "`responses-bridge desktop-url`.")


class WatchTokens:
    """Mints and checks the tokens of one deployment (its sealing key)."""

    def __init__(self, sealer: Sealer, seconds: float, clock: Callable[[], float] = time.time) -> None:
        self._sealer = sealer
        self.seconds = seconds
        self._clock = clock

    def mint(self, kind: Kind, tenant: str, session_id: str, until: float | None = None) -> str:
        """A token good for ``seconds`` from now, or until ``until`` (epoch seconds: the token it was minted from
        ends then) if that comes first."""
        expires = self._clock() + self.seconds
        if until is not None:
            expires = min(expires, until)
        return self._sealer.seal(PURPOSE, [kind, tenant, session_id, round(expires, 3)])

    def tenant_of(self, token: str, kind: Kind, session_id: str) -> str:
        """The tenant the token was minted for, or a 401: altered, another kind or session, or expired."""
        return self.opened(token, kind, session_id)[0]

    def expires(self, token: str, kind: Kind, session_id: str) -> float:
        """When the (valid) token ends, epoch seconds: what a token minted from it may not outlive."""
        return self.opened(token, kind, session_id)[1]

    def opened(self, token: str, kind: Kind, session_id: str) -> tuple[str, float]:
        """The tenant the token was minted for and when it ends, or a 401: altered, another kind or session, or
        expired."""
        try:
            value = self._sealer.open(PURPOSE, token)
        except APIError:
            raise unauthenticated(INVALID, code="invalid_token") from None
        if (not isinstance(value, list) or len(value) != 4 or value[0] != kind or value[2] != session_id
                or not isinstance(value[1], str) or not isinstance(value[3], int | float)):
            raise unauthenticated(INVALID, code="invalid_token")
        if value[3] < self._clock():
            raise unauthenticated(EXPIRED, code="expired_token")
        return value[1], float(value[3])

    def tenant_for(self, path: str, token: str) -> str | None:
        """The tenant of a request to ``path`` carrying ``token`` (a 401 when the token does not open it); None
        when ``path`` is not one a token opens."""
        match = WATCH_PATH.match(path)
        if match is None:
            return None
        return self.tenant_of(token, "page" if match[2] == "live" else "view", match[1])
