"""Binding ``bytes`` and ``None`` to a statement without sqlite3's adaptation lookup.

sqlite3 binds ``int``, ``float``, ``str`` and ``bytearray`` parameters directly; every other value — ``bytes`` (each
stored JSON) and ``None`` (each absent column) included — goes through its adaptation protocol: a registry lookup,
then ``__adapt__`` asked of the protocol's type, whose miss is an ``AttributeError`` formatted and thrown away,
then ``__conform__`` asked of the value. About 1,200 instructions a parameter, twelve parameters a plain response's
save: 0.8 % of a plain request. An adapter registered for the type ends the lookup at the registry, and these two
hand the value back as it is (``bytes(b) is b`` for a ``bytes``; ``{}.get(None)`` is None), in C, so what is bound
is unchanged. Neither is a type sqlite3 treats as basic (registering one of those makes it adapt every parameter),
and both stay identity functions for any other sqlite3 user in the process."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

_registered = False
_AS_NONE: Callable[[None], None] = {}.get  # type: ignore[assignment]  # dict.get(None) is None, in C


def bind_as_is() -> None:
    """Registers the two identity adapters (once per process)."""
    global _registered
    if not _registered:
        sqlite3.register_adapter(bytes, bytes)
        sqlite3.register_adapter(type(None), _AS_NONE)
        _registered = True
