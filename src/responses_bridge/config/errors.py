"""Every configuration mistake as one line naming where the bad value came from, what was wrong and what is
expected.

A value comes from a flag, an environment variable, the YAML file or (for a list or mapping) JSON inside an
environment variable. pydantic reports a bad one as a multi-line ``ValidationError`` about a model the user never
wrote (``UpstreamSpec``), and pydantic-settings reports broken JSON in a variable as a traceback. ``load_settings``
(settings.py) is the one place that builds settings for every command; it turns both into :class:`SettingsError`
through :func:`explain` and :func:`explain_json`, and ``cli.main`` prints that as one line with exit status 2.

Paths inside a value are written one way, ``upstreams[0].url``, whichever source the value came from.
"""

from __future__ import annotations

import json
import os
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import EnvSettingsSource

from ..redact import MASK, mask_text, secret_name
from ..settings_error import SettingsError as SettingsError  # re-exported: config.py and its callers name it here
from .help import expected

_LONGEST_VALUE = 80


class EnvJSONError(Exception):
    """A list or mapping setting's environment variable does not hold JSON. Not a ValueError on purpose: those,
    pydantic-settings wraps in an exception that names its own class, not the variable."""

    def __init__(self, field: str, value: str, error: json.JSONDecodeError) -> None:
        super().__init__(f"{field}: {error}")
        self.field, self.value, self.error = field, value, error


class JsonEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source, with broken JSON reported as :class:`EnvJSONError`."""

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        try:
            return super().decode_complex_value(field_name, field, value)
        except json.JSONDecodeError as exc:
            raise EnvJSONError(field_name, value, exc) from None


@dataclass(frozen=True)
class Sources:
    """Where each setting's value may have come from, in the order they win: the flags given (``given``, with
    ``flags`` naming each one's flag), the environment, then the configuration file (``file`` and the keys it
    set)."""

    given: Mapping[str, object]
    flags: Mapping[str, str]
    env_names: Callable[[str], list[str]]
    file: str | None = None
    file_keys: frozenset[str] = frozenset()

    def env_name(self, field: str) -> str | None:
        """The variable that set ``field``, if one did (pydantic-settings reads names in any case)."""
        present = {name.upper(): name for name in os.environ}
        return next((present[name.upper()] for name in self.env_names(field) if name.upper() in present), None)

    def origin(self, field: str) -> tuple[str, object | None]:
        """(the flag, variable or file that set ``field``, its raw value when a flag or variable set it)."""
        if field in self.given:
            return self.flags.get(field, field), self.given[field]
        name = self.env_name(field)
        if name is not None:
            return name, os.environ[name]
        if self.file is not None and field in self.file_keys:
            return self.file, None
        return (self.env_names(field) or [field])[0], None


def explain(exc: ValidationError, model: type[BaseModel], sources: Sources) -> str:
    """One line for every problem pydantic found, joined with ``; ``."""
    return "; ".join(explain_each(exc, model, sources))


def explain_each(exc: ValidationError, model: type[BaseModel], sources: Sources) -> list[str]:
    """Each problem pydantic found, as its own line (``config check`` prints them one a line)."""
    return [_problem(error, model, sources) for error in exc.errors()]


def explain_json(exc: EnvJSONError, model: type[BaseModel], sources: Sources) -> str:
    """The variable, its value, where its JSON breaks and what the setting looks like."""
    name = sources.env_name(exc.field) or exc.field
    return (f"{name}={_shown(exc.value)}: not valid JSON ({exc.error.msg} at character {exc.error.pos + 1}); "
            f"expected: {expected(exc.field, model.model_fields[exc.field])}")


def _problem(error: Mapping[str, Any], model: type[BaseModel], sources: Sources) -> str:
    loc = tuple(error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if not loc:  # a check across settings: its message starts with the path it is about, when it has one
        return _across(message, model, sources)
    field = str(loc[0])
    label, raw = sources.origin(field)
    path = _path(loc)
    kind = error["type"]
    if kind == "missing":
        what = _description(model, loc)
        return f"{label}: {path} is missing (required{f': {what}' if what else ''})"
    if kind == "extra_forbidden":
        holder = _holder(model, loc)
        known = f"; the keys are {', '.join(holder.model_fields)}" if holder is not None else ""
        return f"{label}: {path} is not a known key{known}"
    if len(loc) == 1 and raw is not None:  # a flag or a variable: its value as the user typed it
        return f"{label}={_shown(raw, field)}: {message}"
    if label == field:  # keyword arguments, no flag named: the path says it all
        return f"{path}={_shown(error.get('input'), str(loc[-1]))}: {message}"
    return f"{label}: {path}={_shown(error.get('input'), str(loc[-1]))}: {message}"


def _across(message: str, model: type[BaseModel], sources: Sources) -> str:
    named = re.match(r"([a-z_]+)[\[.:]", message)
    if named is not None and named.group(1) in model.model_fields:
        label, _ = sources.origin(named.group(1))
        return message if label == named.group(1) else f"{label}: {message}"
    return f"{message} (settings read from {sources.file})" if sources.file is not None else message


def _shown(value: object, name: str = "") -> str:
    """The value as typed, for the line: a credential's masked whole, a URL's password masked (redact.py)."""
    if value is not None and secret_name(name):
        return f"'{MASK}'"
    text = mask_text(repr(value))
    return text if len(text) <= _LONGEST_VALUE else text[:_LONGEST_VALUE - 1] + "…"


def _path(loc: tuple[Any, ...]) -> str:
    """``upstreams[0].url``: list positions in brackets, keys after dots."""
    text = str(loc[0])
    for part in loc[1:]:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _walk(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[type[BaseModel] | None, FieldInfo | None]:
    """The model holding the last key of ``loc`` and that key's field, following lists, mappings and optionals
    down from ``model``; (the last model reached, None) where a key is not a field."""
    annotation: Any = model
    holder: type[BaseModel] | None = None
    info: FieldInfo | None = None
    for part in loc:
        args = typing.get_args(annotation)
        if type(None) in args:
            annotation = next(arg for arg in args if arg is not type(None))
            args = typing.get_args(annotation)
        origin = typing.get_origin(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            holder, info = annotation, annotation.model_fields.get(str(part))
            if info is None:
                return holder, None
            annotation = info.annotation
        elif origin in (list, tuple, set, frozenset) and args:
            annotation, info = args[0], None
        elif origin is dict and len(args) == 2:
            annotation, info = args[1], None
        else:
            return holder, None
    return holder, info


def _holder(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    return _walk(model, loc)[0]


def _description(model: type[BaseModel], loc: tuple[Any, ...]) -> str | None:
    info = _walk(model, loc)[1]
    return info.description if info is not None else None
