"""What a tenant may be called, checked where a tenant is named for a new key (``responses-bridge keys create
--tenant``, the console's Operations form).

A tenant's name is shown on the console's pages and in ``keys list``'s columns, written into log lines and metrics,
and typed into the console's ``?tenant=``: a name with a NUL, a newline or a bidi override, thousands of
characters, or a ``*`` that reads as "every tenant" would break each of those, or mislead the operator reading them.
So a name is 1 to :data:`MAX_CHARS` letters and digits (any script) and ``. _ - @ + ~``, nothing else: no spaces,
no separators (``/ \\ , ; : | = & # % ? *`` …), no quotes, no control or formatting characters. Names made before
this rule keep working: only a new key is checked.
"""

from __future__ import annotations

MAX_CHARS = 128
PUNCTUATION = frozenset("._-@+~")
RULE = (f"a tenant name is 1 to {MAX_CHARS} letters, digits and . _ - @ + ~ (no spaces, no separators such as "
        "/ : , or *, no quotes, no control characters)")


def tenant_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a new key's tenant (a sentence ending with :data:`RULE`), or None when it can."""
    if not name:
        return "the tenant name is empty: " + RULE
    if len(name) > MAX_CHARS:
        return f"the tenant name is {len(name)} characters long: " + RULE
    for char in name:
        if not (char.isalnum() or char in PUNCTUATION):
            return f"the tenant name holds {_shown(char)}: " + RULE
    return None


def _shown(char: str) -> str:
    """A refused character as a reader can see it (a control character as its code point, never itself)."""
    if char.isprintable() and not char.isspace():
        return f"{char!r}"
    return f"U+{ord(char):04X}"
