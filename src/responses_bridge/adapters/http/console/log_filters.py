"""What the logs are narrowed to (logs.py's pages, and their CSV export), read from a page's query.

Two kinds of filter. Those an index holds are conditions of the listing statement, as the API's ``GET
/v1/responses`` has them: the model, the status, a time range (the listing index led by the tenant), a metadata
key and value (its own index, migration 10), the API key's id that made the response (a column, SQLite migration 37).
The others are looked for by the database in the stored JSON, in the
same bounded stretches as the text search (logs.py): the text, anywhere in the response or its input items; a
tool's name, a ``user``/``safety_identifier``, a conversation's id, an error's code, each as a whole JSON string
(``"conv_1"``, never the inside of a longer one), then checked against the field it names once the row is read to
be shown (:meth:`Filters.admits`): a value that only happens to be written elsewhere in the response shows nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from ....store.browsing import SORTS, as_stored, whole_string
from ....store.records import ResponseFilter
from .items import tools_used

STATUSES = ("completed", "failed", "incomplete", "in_progress", "queued", "cancelled")
SPANS = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
VALUE_CHARS = 200
TIME_FORMATS = ("%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d")
"""A time range's ends as a ``datetime-local`` input sends them (UTC, as every time the console shows), or a day."""


def _when(text: str) -> int | None:
    for form in TIME_FORMATS:
        try:
            return int(datetime.strptime(text, form).replace(tzinfo=UTC).timestamp())
        except ValueError:
            continue
    return None


@dataclass(slots=True)
class Filters:
    model: str = ""
    status: str = ""
    since: str = ""  # one of SPANS, or ""
    tool: str = ""
    text: str = ""
    meta: str = ""  # "key=value": a metadata pair, from its own index
    user: str = ""  # a `user` or `safety_identifier`
    conversation: str = ""  # a conversation's id
    error: str = ""  # an error's code
    start: str = ""  # the time range's ends (UTC): from, inclusive …
    end: str = ""  # … to, exclusive
    sort: str = ""  # one of SORTS (slowest first), or "": newest first
    key: str = ""  # an API key's id (as ``keys list`` shows it): the responses made with it (a column of the row)

    @classmethod
    def of(cls, query: Any) -> Filters:
        """The filters of a page's query: each value trimmed and cut at VALUE_CHARS; a status or span not known, a
        time not read, a metadata filter without ``=``: none (the page shows the unfiltered list, and the form
        shows what it kept)."""
        values = {field.name: str(query.get(field.name, "")).strip()[:VALUE_CHARS] for field in fields(cls)}
        made = cls(**values)
        made.status = made.status if made.status in STATUSES else ""
        made.since = made.since if made.since in SPANS else ""
        made.meta = made.meta if "=" in made.meta else ""
        made.sort = made.sort if made.sort in SORTS else ""
        made.start = made.start if _when(made.start) is not None else ""
        made.end = made.end if _when(made.end) is not None else ""
        return made

    def where(self, now: float) -> ResponseFilter:
        after = [int(now) - SPANS[self.since]] if self.since else []
        if self.start:
            after.append(_when(self.start) or 0)
        key, _, value = self.meta.partition("=")
        return ResponseFilter(model=self.model or None, status=self.status or None,
                              metadata=((key.strip(), value.strip()),) if self.meta else (),
                              created_after=max(after) if after else None,
                              created_before=_when(self.end) if self.end else None,
                              key_id=self.key or None)

    def needles(self) -> list[str]:
        """What the database looks for in each response's stored JSON (the text in its input items too: see
        :meth:`input_needles`): the text anywhere, a name or an id as a whole string (then checked by
        :meth:`admits` once the response is read to be shown)."""
        return ([as_stored(self.text)] if self.text else []) + [
            whole_string(value) for value in (self.tool, self.user, self.conversation, self.error) if value]

    def input_needles(self) -> list[str]:
        """The needles also looked for in a response's input items: the text (a word the user wrote)."""
        return [as_stored(self.text)] if self.text else []

    @property
    def checked(self) -> bool:
        """Whether a row found by a needle is checked against the field it names before it is shown."""
        return bool(self.tool or self.user or self.conversation or self.error)

    def admits(self, response: dict[str, Any]) -> bool:
        """Whether a response found by the needles has them where the filters name them (runs where the response
        is parsed: a worker thread)."""
        if self.tool and self.tool.lower() not in (name.lower() for name in tools_used(response)):
            return False
        if self.user and self.user not in (response.get("user"), response.get("safety_identifier")):
            return False
        if self.conversation:
            held = response.get("conversation")
            if (held.get("id") if isinstance(held, dict) else held) != self.conversation:
                return False
        if self.error:
            error = response.get("error")
            if not isinstance(error, dict) or error.get("code") != self.error:
                return False
        return True

    def query(self) -> dict[str, str]:
        return {field.name: getattr(self, field.name) for field in fields(self) if getattr(self, field.name)}
