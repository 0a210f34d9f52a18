"""``responses-bridge keys create|list|revoke``: the bridge's own API keys (``RESPONSES_BRIDGE_AUTH=keys``).

The keys live in the sidecar's database, found as ``serve`` finds it: the shared PostgreSQL database when
``RESPONSES_BRIDGE_DATABASE_URL`` (or the configuration's ``database_url``) is set, else the SQLite file (``--db``,
else ``RESPONSES_BRIDGE_DB`` or the configuration file's ``db``), which must exist: ``keys`` creates a database
only when ``create`` is given a path by name (see :func:`_check_database`). ``create`` prints the new key alone on
stdout, once: only a salted hash is kept, so it can never be shown again; everything else goes to stderr, so
``KEY=$(responses-bridge keys create --tenant t)`` works. ``create --operator`` makes an operator's key: the console
(``/console``, adapters/http/console/) shows its holder every tenant and Operations.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Coroutine
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from ..config import file as config_file
from ..config.settings import SettingsError, load_settings
from ..services.tenancy.tenant_names import MAX_CHARS, tenant_name_problem

if TYPE_CHECKING:
    from ..config.settings import Settings
    from ..store.base import ApiKeyStore

T = TypeVar("T")
OPERATOR_TENANT = "operator"
"""The tenant an operator's key acts as on the API when ``--tenant`` names none."""
_DURATION = re.compile(r"(\d+)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
EXPIRES_HELP = ("when the key stops working: a duration from now (30d, 12h, 90m, 2w; units s m h d w) or an ISO "
                "date or date-time (2027-01-31 is that day's start, 00:00 UTC; 2027-01-31T18:00:00+02:00; a "
                "date-time without an offset is UTC). Default: never")


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("keys", help="make, list and revoke the bridge's own API keys (auth: keys)")
    actions = parser.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="make a key for a tenant; prints the key alone on stdout, once")
    create.add_argument("--tenant", default=None, help="the tenant the key's requests act as (required, except "
                        f"with --operator, whose key acts as {OPERATOR_TENANT!r} unless a tenant is named): 1 to "
                        f"{MAX_CHARS} letters, digits and . _ - @ + ~")
    create.add_argument("--operator", action="store_true", help="an operator's key: the console (/console) shows "
                        "its holder every tenant and Operations (pools, keys, tenants); to the API it is its "
                        "tenant's key")
    create.add_argument("--expires", default=None, metavar="WHEN", help=EXPIRES_HELP)
    create.set_defaults(func=create_command)
    listing = actions.add_parser("list", help="every key: id, tenant, created, expires, revoked, and kind where an "
                                 "operator's key exists (never the key)")
    listing.set_defaults(func=list_command)
    revoke = actions.add_parser("revoke", help="revoke a key by its id (as `keys list` shows it), at once")
    revoke.add_argument("id", metavar="ID")
    revoke.set_defaults(func=revoke_command)
    for action in (create, listing, revoke):
        action.add_argument("--db", default=None, help="the sidecar's SQLite file (default: RESPONSES_BRIDGE_DB, "
                            "the configuration's `db`, else the one under the user data directory, as `serve`)")
        action.add_argument("--config", metavar="FILE", default=None,
                            help="YAML configuration file, as `serve --config` (env: RESPONSES_BRIDGE_CONFIG)")


def parse_expires(text: str, now: float | None = None) -> int:
    """Unix seconds of ``--expires``: a duration from ``now`` or an ISO date / date-time. ValueError if neither, or
    if it is not in the future."""
    now = time.time() if now is None else now
    value = text.strip()
    duration = _DURATION.fullmatch(value)
    if duration is not None:
        seconds = int(duration.group(1)) * _UNIT_SECONDS[duration.group(2)]
        if seconds <= 0:
            raise ValueError(f"--expires {text!r}: a duration must be longer than zero")
        return int(now) + seconds
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            moment = datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
        else:
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"--expires {text!r}: not a duration (30d, 12h) or an ISO date (2027-01-31)") from None
    when = int(moment.timestamp())
    if when <= now:
        raise ValueError(f"--expires {text!r}: that is not in the future")
    return when


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings({"db": "--db"}, config=args.config, db=args.db)
    _check_database(settings, args)
    return settings


def _check_database(settings: Settings, args: argparse.Namespace) -> None:
    """``keys`` never makes a database by accident: ``list`` and ``revoke`` need one that exists, and ``create``
    makes a new one only at a path the user named (``--db``, ``RESPONSES_BRIDGE_DB`` or the file's ``db``), never
    at the default under the user data directory, which only ``serve`` creates. A shared PostgreSQL database is
    always there; reaching it is checked when it opens."""
    from ..store import default_db_path

    if settings.database_url is not None:
        return
    named = _named_by(args)
    path = settings.db or default_db_path(make_directory=False)
    if path == ":memory:":
        raise SettingsError(f"{named}=':memory:': keys need the database `serve` uses, and an in-memory one is gone "
                            "when the command ends; name the SQLite file")
    if os.path.exists(path):
        return
    if args.keys_command != "create":
        raise SettingsError(f"no database at {path} ({named}): name the SQLite file `serve` uses, or run `keys "
                            "create` with --db to make a new one")
    if not settings.db:
        raise SettingsError(f"no database at {path} (the default, under the user data directory): start `serve` "
                            "once to create it, or name a file with --db (a new database is made only at a named path)")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise SettingsError(f"{named}={path!r}: the directory {parent} does not exist")


def _named_by(args: argparse.Namespace) -> str:
    """What chose the database path, for the messages."""
    if args.db:
        return "--db"
    if os.environ.get("RESPONSES_BRIDGE_DB"):
        return "RESPONSES_BRIDGE_DB"
    path = config_file.path_from(args.config)
    if path is not None:
        return f"{path}: db"
    return "the default database"


def create_command(args: argparse.Namespace) -> int:
    tenant = (args.tenant or (OPERATOR_TENANT if args.operator else "")).strip()
    if not tenant:
        print("responses-bridge keys create: --tenant must name a tenant", file=sys.stderr)
        return 2
    problem = tenant_name_problem(tenant)
    if problem is not None:  # checked before any database is opened: nothing is made
        print(f"responses-bridge keys create: --tenant: {problem}", file=sys.stderr)
        return 2
    try:
        expires_at = None if args.expires is None else parse_expires(args.expires)
    except ValueError as exc:
        print(f"responses-bridge keys create: {exc}", file=sys.stderr)
        return 2
    settings = _settings(args)

    async def create() -> tuple[str, str, str]:
        async with _keys(settings) as (keys, where):
            text, row = await keys.create_key(tenant, expires_at=expires_at, operator=args.operator)
            return text, row.id, where

    text, key_id, where = _run("create", create())
    print(text)
    sys.stdout.flush()
    expiry = "never" if expires_at is None else _when(expires_at)
    kind = "an operator's key" if args.operator else "key"
    print(f"created {kind} {key_id} for tenant {tenant!r} (expires: {expiry}) in {where}; it is shown only this once",
          file=sys.stderr)
    return 0


def list_command(args: argparse.Namespace) -> int:
    async def listed() -> list[tuple[str, ...]]:
        async with _keys(_settings(args)) as (keys, _):
            return [(key.id, key.tenant, _when(key.created_at), _when(key.expires_at) if key.expires_at else "never",
                     _when(key.revoked_at) if key.revoked_at else "-", "operator" if key.operator else "tenant")
                    for key in await keys.list_keys()]

    found = _run("list", listed())
    # KIND (tenant / operator) is a sixth column only where an operator's key exists: the five columns scripts read
    # stay where they were
    columns = 6 if any(row[5] == "operator" for row in found) else 5
    rows = [row[:columns] for row in [("ID", "TENANT", "CREATED", "EXPIRES", "REVOKED", "KIND"), *found]]
    widths = [max(len(row[column]) for row in rows) for column in range(columns)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def revoke_command(args: argparse.Namespace) -> int:
    async def revoke() -> bool:
        async with _keys(_settings(args)) as (keys, _):
            return await keys.revoke_key(args.id)

    if not _run("revoke", revoke()):
        print(f"responses-bridge keys revoke: no key has the id {args.id!r} (see `keys list`)", file=sys.stderr)
        return 1
    print(f"revoked key {args.id}", file=sys.stderr)
    return 0


def _run(action: str, work: Coroutine[Any, Any, T]) -> T:
    """Runs one command's store work; a database that cannot be opened is one line (naming it and its setting,
    store/open.py) and exit status 1, as at ``serve``'s start."""
    from ..store.database_url import DatabaseUnavailable

    try:
        return asyncio.run(work)
    except DatabaseUnavailable as exc:
        print(f"responses-bridge keys {action}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def _when(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@contextlib.asynccontextmanager
async def _keys(settings: Settings) -> AsyncIterator[tuple[ApiKeyStore, str]]:
    """The key store on the sidecar's database (and where that is, for the messages), opened and migrated for one
    command."""
    from ..store.open import open_stores

    url = settings.database_url.get_secret_value() if settings.database_url is not None else None
    stores = await open_stores(settings.db_path(), url)
    try:
        yield stores.api_keys, stores.where
    finally:
        await stores.close()
