"""The YAML configuration file (``--config FILE`` / ``RESPONSES_BRIDGE_CONFIG``) as a pydantic-settings source.

pydantic-settings reads and merges it (``YamlConfigSettingsSource``), below flags and environment variables. This
module adds what a file given by hand needs: a missing file, broken YAML, a file that is not a mapping and a key
no setting has (a typo would otherwise be ignored in silence) all stop the start with one line naming the file.
Which file applies is passed to ``Settings`` through a context variable, because pydantic-settings builds its
sources from the class, not from the call.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import AliasChoices
from pydantic_settings import YamlConfigSettingsSource

if TYPE_CHECKING:
    from pydantic_settings import BaseSettings

CONFIG_ENV = "RESPONSES_BRIDGE_CONFIG"


class ConfigFileError(ValueError):
    """The configuration file cannot be used; the message names it."""


@dataclass
class Reading:
    """One configuration file being read into settings, and the keys it set (to say where a bad value came from).
    ``lenient``: a key no setting has is noted in ``unknown`` (one line each) instead of stopping the reading, so
    ``config check`` can report it together with the file's other problems."""

    path: str
    keys: set[str] = field(default_factory=set)
    lenient: bool = False
    unknown: list[str] = field(default_factory=list)

    def sets(self, name: str) -> bool:
        return name in self.keys


_current: ContextVar[Reading | None] = ContextVar("responses_bridge_config_file", default=None)


def path_from(flag: str | None) -> str | None:
    """The file in effect: the flag's, else the environment's; None when neither names one."""
    return flag or os.environ.get(CONFIG_ENV) or None


@contextmanager
def reading(flag: str | None, *, lenient: bool = False) -> Iterator[Reading | None]:
    """While this lasts, settings are built over the file ``flag`` (or ``RESPONSES_BRIDGE_CONFIG``) names."""
    path = path_from(flag)
    current = Reading(path, lenient=lenient) if path else None
    token = _current.set(current)
    try:
        yield current
    finally:
        _current.reset(token)


def current_path() -> str | None:
    current = _current.get()
    return current.path if current is not None else path_from(None)


def known_keys(settings_cls: type[BaseSettings]) -> set[str]:
    """Every key a file may use: the field names, and the lower-case names of their aliases."""
    keys = set(settings_cls.model_fields)
    for info in settings_cls.model_fields.values():
        alias = info.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
        keys.update(name for name in choices if isinstance(name, str) and not name.isupper())
    return keys


def _unknown_key(path: str, key: str, known: set[str]) -> str:
    """The line for a key no setting has, naming the closest one there is."""
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else "keys are the setting names, e.g. http_port"
    return f"{path}: unknown setting {key!r}; {hint}"


class ConfigFileSource(YamlConfigSettingsSource):
    """pydantic-settings' YAML source over one named file, with errors that name it."""

    def __init__(self, settings_cls: type[BaseSettings], path: str) -> None:
        self._path = path
        if not Path(path).is_file():
            raise ConfigFileError(f"{path}: no such configuration file ({CONFIG_ENV} / --config)")
        super().__init__(settings_cls, yaml_file=path)
        known = known_keys(settings_cls)
        unknown = [_unknown_key(path, str(key), known) for key in sorted(set(self.yaml_data) - known, key=str)]
        current = _current.get()
        if unknown and not (current is not None and current.lenient):
            raise ConfigFileError("; ".join(unknown))
        if current is not None:
            current.unknown.extend(line for line in unknown if line not in current.unknown)  # read twice: once
            current.keys.update(self.yaml_data)

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        import yaml  # only a sidecar given a file reads YAML (pydantic-settings imports it here too)

        try:
            data = super()._read_file(file_path)
        except yaml.YAMLError as exc:
            raise ConfigFileError(f"{self._path}: not valid YAML: {' '.join(str(exc).split())}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigFileError(f"{self._path}: cannot be read: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigFileError(f"{self._path}: expected a mapping of settings at the top, "
                                  f"got {type(data).__name__}")
        return data
