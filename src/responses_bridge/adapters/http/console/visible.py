"""Bidirectional controls in stored text made visible instead of obeyed.

A model, a client or a page may write U+202E (RIGHT-TO-LEFT OVERRIDE) and its kin into a response: shown as they are,
they reorder the text around them on the page (a file name reading ``txt.exe`` as ``exe.txt``, an id that is not the
one it seems to be). Every value a console page renders passes through :func:`visible` (the templates' ``finalize``),
which shows each such control as a marker naming it, ``⟨U+202E⟩``, that acts on nothing.
"""

from __future__ import annotations

import re
from typing import Any

from markupsafe import Markup

BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""The Unicode bidirectional formatting characters: ALM, LRM, RLM, the embeddings and overrides (LRE, RLE, PDF,
LRO, RLO) and the isolates (LRI, RLI, FSI, PDI)."""


def visible(value: Any) -> Any:
    """``value`` with every bidi control shown as its code point in angle brackets, e.g. ``⟨U+202E⟩`` for
    RIGHT-TO-LEFT OVERRIDE (markup stays markup: the marker holds nothing to escape)."""
    if not isinstance(value, str) or not BIDI.search(value):
        return value
    shown = BIDI.sub(_marker, value)
    return Markup(shown) if isinstance(value, Markup) else shown


def _marker(found: re.Match[str]) -> str:
    return f"\u27e8U+{ord(found.group()):04X}\u27e9"
