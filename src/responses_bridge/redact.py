"""The one masking of credentials, wherever a value is shown: every log line (observability/logs.py runs it over
every field of every event, the standard library's records too), ``config show`` and the one-line configuration
errors.

Two things are masked. A value whose name says it is a credential (``api_key``, ``sealing_key``, ``database_url``,
an ``Authorization`` header, …) is replaced whole. Any other text keeps its shape with the credential-shaped parts
replaced: the password of a URL (``postgresql://user:********@host/db``, a ``--db`` or an upstream URL given with
one), an ``Authorization`` value (``Bearer ********``), a query parameter named like a key
(``?api_key=********``), a ``password=`` pair, and the keys of OpenAI (``sk-…``) and of the bridge (``rbk_…``).
Secrets must never reach a log by any flag, so the masking is applied to what is written, not trusted to the
callers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr

MASK = "********"
_SECRET_NAME = re.compile(r"(^|[_-])(key|secret|token|password|passwd|authorization|credentials?|cookie)$"
                          r"|^(database_url|dsn)$", re.IGNORECASE)
_NOT_SECRET = frozenset({"forward"})  # api_key: forward means "send the client's own key": a mode, not a key
_NOT_SECRET_NAMES = frozenset({"cache_key", "prompt_cache_key", "tool_type_key", "sort_key"})

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # the password of a URL's user info: scheme://user:PASSWORD@host
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@/\s]+@", re.IGNORECASE), rf"\g<1>{MASK}@"),
    # an Authorization value, wherever it is quoted
    (re.compile(r"\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]{6,}", re.IGNORECASE), rf"\g<1> {MASK}"),
    # a query parameter or key=value pair named like a credential
    (re.compile(r"(\b(?:api[_-]?key|access[_-]?token|auth[_-]?token|token|secret|password|passwd|pwd|sig|"
                r"signature|key)\s*=\s*)[^&\s#'\",;]+", re.IGNORECASE), rf"\g<1>{MASK}"),
    # OpenAI's keys, and the bridge's own (store/keys.py)
    (re.compile(r"\bsk-[A-Za-z0-9_-]{12,}"), f"sk-{MASK}"),
    (re.compile(r"\brbk_[0-9a-f]{12}_[A-Za-z0-9_-]{20,}"), f"rbk_{MASK}"),
)


def secret_name(name: str) -> bool:
    """Does the name of a setting, field or header say its value is a credential?"""
    return bool(name) and name.lower() not in _NOT_SECRET_NAMES and _SECRET_NAME.search(name) is not None


def mask_text(text: str) -> str:
    """``text`` with every credential-shaped part masked (see the module's docstring); unchanged when it has none.
    A quick look for the characters every pattern needs keeps the common case (no credential) cheap."""
    if not any(mark in text for mark in ("://", "=", "Bearer", "bearer", "Basic", "Token", "sk-", "rbk_")):
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def mask(value: Any, name: str = "") -> Any:
    """``value`` with every credential masked, at any depth: a value under a credential's name whole (a mode such as
    ``api_key: forward`` excepted), any other text by :func:`mask_text`; mappings and sequences are walked."""
    if isinstance(value, SecretStr):
        return MASK if value.get_secret_value() else value
    if isinstance(value, Mapping):
        return {key: mask(item, str(key)) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [mask(item, name) for item in value]
    if value is None or isinstance(value, bool):
        return value
    if secret_name(name) and value not in _NOT_SECRET and value != "":
        return MASK
    if isinstance(value, str):
        return mask_text(value)
    return value
