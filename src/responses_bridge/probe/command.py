"""``responses-bridge probe URL [--model M]``: measure what an upstream supports and print the table.

The table ends in ``mode: translate`` or ``mode: native``; the result is cached with the deployment (cache.py:
beside the database ``--db`` / ``--config`` / the environment name, as ``serve`` would use it) and shown by that
deployment's ``config show`` when the URL is one of its upstreams. The checks themselves are in checks.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from . import DEFAULT_TIMEOUT


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "probe", help="ask an upstream what it supports (native /v1/responses, dialect quirks) with a few tiny "
        "requests; prints a table ending in 'mode: translate' or 'mode: native'")
    parser.add_argument("url", metavar="URL", help="the upstream's base URL, ending in /v1")
    parser.add_argument("--model", help="the model to ask (default: the first GET /models lists)")
    parser.add_argument("--api-key", help="key sent as Authorization: Bearer "
                        "(default: RESPONSES_BRIDGE_API_KEY or OPENAI_API_KEY)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"seconds each request may take (default {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--no-cache", action="store_true", help="do not keep the result for 'config show'")
    parser.add_argument("--db", help="the deployment's SQLite file: the result is kept beside it "
                        "(default: RESPONSES_BRIDGE_DB, else the default database's folder)")
    parser.add_argument("--config", metavar="FILE", help="the deployment's YAML configuration file, for its --db")
    parser.set_defaults(func=run)


def checked_url(text: str) -> str:
    """The URL argument as an upstream's base URL; a mistake in it (no scheme) is the one line cli.main prints."""
    from ..config.settings import SettingsError
    from ..config.upstreams import base_url

    try:
        return base_url(text)
    except ValueError as exc:
        raise SettingsError(f"URL {text!r}: {exc}") from None


def run(args: argparse.Namespace) -> int:
    from ..config.settings import SettingsError, load_settings
    from . import cache as probe_cache
    from .checks import ProbeError, probe_upstream

    key = args.api_key or os.environ.get("RESPONSES_BRIDGE_API_KEY") or os.environ.get("OPENAI_API_KEY")
    url = checked_url(args.url)
    try:
        report = asyncio.run(probe_upstream(url, model=args.model, api_key=key, timeout=args.timeout))
    except ProbeError as exc:
        print(f"responses-bridge probe: {exc}", file=sys.stderr)
        return 1
    if not args.no_cache:
        try:
            cache = probe_cache.cache_path(load_settings(config=args.config, db=args.db).db_path())
            probe_cache.save(cache, report)
        except SettingsError as exc:
            print(f"responses-bridge probe: result not cached: {exc}", file=sys.stderr)
        except OSError as exc:  # the measurement stands without its cache
            print(f"responses-bridge probe: result not cached: {exc}", file=sys.stderr)
    print("\n".join(report.lines()))
    return 0
