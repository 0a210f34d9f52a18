"""An ``openai_hosted`` environment's ``packages`` checked: what pip and npm are handed at the environment's start
(services/agents/environments/packages.py installs them).

Each entry is a package, never an option or a place: a Python requirement specifier (PEP 508: a name, extras,
a version specifier, a marker) without a direct reference (``name @ url``), an npm package name (scoped or not)
with an optional version or range. Whatever starts with ``-`` (``--index-url``, ``-e``), a path, a URL, a git or
file reference is a 400 naming the entry: an entry that chose where packages come from would go around the
operator's indexes (``RESPONSES_BRIDGE_PACKAGE_INDEXES``). A ``system`` entry is a Debian package name with an
optional ``=version``, fetched from the operator's Debian repositories and unpacked (never installed as root: the
sandbox gives none), services/agents/environments/packages.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..errors import invalid_request

PACKAGE_KINDS = ("npm", "python", "system")  # the kinds an environment's ``packages`` names
MAX_PACKAGES = 50
"""Entries of one kind (``python``, ``npm``) an environment may ask for."""
MAX_ENTRY = 200
NPM_NAME = re.compile(r"(?:@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*")
NPM_VERSION = re.compile(r"[0-9A-Za-z.^~<>=*|+ -]+")  # a version, a range or a dist-tag: no ':' or '/' (no URL)
PYTHON_FORBIDDEN = re.compile(r"[/\\:@]")  # outside a marker's quotes: a path, a URL, a direct reference
DEBIAN_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+(?:=[A-Za-z0-9.+~:-]+)?")  # Debian policy 5.6.1 and 5.6.12
DEBIAN_WORD = re.compile(r"[A-Za-z0-9._/-]+")  # a suite or a component of a repository
DEBIAN_OPTIONS = re.compile(r"\[(?:trusted=yes|signed-by=/[A-Za-z0-9._/-]+)\]")
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"  # under the sandbox's /usr (the host's)


def python_package(entry: Any, param: str) -> str:
    """A requirement specifier pip may be handed as one argument, normalized by ``packaging``."""
    if not isinstance(entry, str) or not entry.strip() or len(entry) > MAX_ENTRY:
        raise _invalid(param, f"expected a requirement specifier of at most {MAX_ENTRY} characters")
    text = entry.strip()
    if text.startswith("-"):
        raise _invalid(param, "an option is not a package (the indexes are the operator's)")
    # imported by an environment's first Python package (some 10 ms), not at start: ~0.5 MiB of every idle sidecar
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        requirement = Requirement(text)
    except InvalidRequirement:
        raise _invalid(param, "expected a requirement specifier (such as 'requests' or 'numpy>=2,<3')") from None
    head = text.split(";", 1)[0]
    if requirement.url is not None or PYTHON_FORBIDDEN.search(head):
        raise _invalid(param, "a path, URL or direct reference is not a package from the operator's indexes")
    return str(requirement)


def npm_package(entry: Any, param: str) -> str:
    """An npm package name with an optional ``@version`` (or range, or dist-tag)."""
    if not isinstance(entry, str) or not entry or len(entry) > MAX_ENTRY:
        raise _invalid(param, f"expected an npm package name of at most {MAX_ENTRY} characters")
    if entry.startswith("-"):
        raise _invalid(param, "an option is not a package (the registry is the operator's)")
    at = entry.find("@", 1)  # a scope's '@' comes first
    name, version = (entry, None) if at < 0 else (entry[:at], entry[at + 1:])
    if not NPM_NAME.fullmatch(name) or (version is not None and not NPM_VERSION.fullmatch(version)):
        raise _invalid(param, "expected an npm package name with an optional @version (no path, URL, git or file "
                              "reference)")
    return entry


def system_package(entry: Any, param: str) -> str:
    """A Debian package name, with an optional ``=version``: one argument of ``apt-get download``."""
    if not isinstance(entry, str) or len(entry) > MAX_ENTRY or not DEBIAN_NAME.fullmatch(entry):
        raise _invalid(param, "expected a Debian package name with an optional =version (such as 'jq' or "
                              "'jq=1.6-2.1')")
    return entry


def _invalid(param: str, why: str) -> Exception:
    return invalid_request(f"Invalid value for '{param}': {why}.", param=param, code="invalid_value")


def checked_packages(value: Any) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """``environment.packages`` as ``(python, npm, system)``, each entry checked (a 400 naming it)."""
    if value is None:
        return (), (), ()
    if not isinstance(value, dict):
        raise invalid_request("Invalid type for 'environment.packages': expected an object.",
                              param="environment.packages", code="invalid_type")
    found: dict[str, tuple[str, ...]] = {}
    for kind, entries in value.items():
        param = f"environment.packages.{kind}"
        if kind not in ("python", "npm", "system"):
            raise invalid_request(f"Unknown parameter: '{param}'.", param=param, code="unknown_parameter")
        if entries is None or entries == []:
            continue
        if not isinstance(entries, list):
            raise invalid_request(f"Invalid type for '{param}': expected an array of packages.", param=param,
                                  code="invalid_type")
        if len(entries) > MAX_PACKAGES:
            raise invalid_request(f"Invalid value for '{param}': at most {MAX_PACKAGES} packages.", param=param,
                                  code="invalid_value")
        check = {"python": python_package, "npm": npm_package, "system": system_package}[kind]
        found[kind] = tuple(check(entry, f"{param}[{position}]") for position, entry in enumerate(entries))
    return found.get("python", ()), found.get("npm", ()), found.get("system", ())


@dataclass(frozen=True, slots=True)
class PackageIndexes:
    """The operator's indexes: pip's (the first is ``--index-url``, the others ``--extra-index-url``), npm's
    registry, and the Debian repositories system packages come from (each a ``sources.list`` line without its
    ``deb``: ``[options] URL suite [component...]``, signed by the Debian archive's keyring unless its options say
    otherwise)."""

    python: tuple[str, ...] = ()
    npm: str | None = None
    debian: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: str) -> PackageIndexes:
        """``python=URL,npm=URL,debian=[options] URL suite component…`` (http or https URLs); a ValueError naming
        the entry otherwise."""
        python: list[str] = []
        npm: list[str] = []
        debian: list[str] = []
        for entry in (part.strip() for part in value.split(",")):
            if not entry:
                continue
            kind, _, url = entry.partition("=")
            if kind.strip() == "debian":
                debian.append(_debian_source(entry, url))
                continue
            found = urlsplit(url.strip())
            if kind.strip() not in ("python", "npm") or found.scheme not in ("http", "https") \
                    or not found.hostname or found.username or found.password:
                raise ValueError(f"{entry!r}: expected python=URL or npm=URL, an http(s) URL without credentials")
            (python if kind.strip() == "python" else npm).append(url.strip())
        if len(npm) > 1:
            raise ValueError("at most one npm=URL (npm installs from one registry)")
        return cls(tuple(python), npm[0] if npm else None, tuple(debian))

    def hosts(self) -> list[str]:
        urls = [*self.python, *([self.npm] if self.npm else []), *(_debian_url(line) for line in self.debian)]
        return sorted({urlsplit(url).hostname or "" for url in urls} - {""})


def _debian_source(entry: str, value: str) -> str:
    """A ``debian=`` entry as its ``sources.list`` line (without ``deb``), signed by the Debian keyring by default."""
    words = value.split()
    options = words.pop(0) if words and words[0].startswith("[") else f"[signed-by={DEBIAN_KEYRING}]"
    found = urlsplit(words[0]) if words else None
    if not DEBIAN_OPTIONS.fullmatch(options) or found is None or found.scheme not in ("http", "https") \
            or not found.hostname or found.username or found.password or len(words) < 2 \
            or not all(DEBIAN_WORD.fullmatch(word) for word in words[1:]):
        raise ValueError(f"{entry!r}: expected debian=[trusted=yes|signed-by=/path] URL suite [component...], an "
                         "http(s) URL without credentials")
    return " ".join([options, *words])


def _debian_url(line: str) -> str:
    return line.split()[1]
