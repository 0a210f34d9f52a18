"""``responses-bridge desktop-url SESSION_ID``: the link to watch a session's desktop live, printed for a browser.

A client of the bridge, not of its database: it asks the running bridge for the session with the tenant's key (as
the SDK's ``client.beta.agents.sessions.retrieve`` would) and prints the session's ``desktop_live_url``, so the
tenant's key decides whose session it is and the link carries a short-lived token, never the key
(adapters/http/desktop_watch_tokens.py). Standard library only: it loads none of the bridge.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from urllib.parse import quote

from ..config.endpoints import DEFAULT_HTTP_PORT

TIMEOUT = 30.0


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "desktop-url", help="print the link to watch an agent session's desktop live in a browser (view only; the "
        "link expires after desktop_watch_link_seconds)",
        description="Asks the running bridge for the session (with the tenant's key) and prints its "
        "desktop_live_url: a page showing the session's desktop as it changes, and its calls beside it. Exit 1 "
        "when the session has no running desktop or the bridge refuses.")
    parser.add_argument("session_id", metavar="SESSION_ID", help="the agent session whose desktop to watch")
    parser.add_argument("--url", default=f"http://127.0.0.1:{DEFAULT_HTTP_PORT}",
                        help="the bridge's HTTP door, or an Envoy in front of it (default: %(default)s)")
    parser.add_argument("--api-key", default=None,
                        help="the tenant's key (default: $OPENAI_API_KEY, as the openai SDK reads it; none needed "
                        "with RESPONSES_BRIDGE_AUTH=none)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    key = args.api_key if args.api_key is not None else os.environ.get("OPENAI_API_KEY")
    base = args.url.rstrip("/").removesuffix("/v1")
    request = urllib.request.Request(f"{base}/v1/agents/sessions/{quote(args.session_id, safe='')}",
                                     headers={"OpenAI-Beta": "agents=v1", "Accept": "application/json",
                                              **({"Authorization": f"Bearer {key}"} if key else {})})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
            session = json.loads(answer.read())
    except urllib.error.HTTPError as error:
        print(f"responses-bridge desktop-url: {error.code} {_message(error.read())}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError, ValueError) as error:
        print(f"responses-bridge desktop-url: cannot reach the bridge at {base} (--url): {error}", file=sys.stderr)
        return 1
    url = session.get("desktop_live_url") if isinstance(session, dict) else None
    if not isinstance(url, str):
        print(f"responses-bridge desktop-url: session '{args.session_id}' has no running desktop (its environment "
              "has none, or it has not started yet or has stopped)", file=sys.stderr)
        return 1
    print(url)
    return 0


def _message(body: bytes) -> str:
    """The OpenAI-shaped error's message, or the start of whatever came."""
    try:
        error = json.loads(body).get("error") or {}
        return str(error.get("message") or error)
    except (ValueError, AttributeError):
        return body[:200].decode(errors="replace")
