"""``responses-bridge config show`` and ``responses-bridge config check FILE``.

``show`` prints the configuration the sidecar would start with (flags > environment > file > defaults) as YAML,
secrets masked, then the engine switches its profile resolves to and the cached probe results. ``check`` reads
one file the way ``serve --config`` would and says whether it is valid, without starting anything.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from . import config_file
from .config import SettingsError, load_settings

MASK = "********"
# Setting names whose values are credentials: api_key, brave_api_key, sealing_key, an MCP token, ...
_SECRET_NAME = re.compile(r"(^|_)(key|secret|token|password|authorization)$", re.IGNORECASE)
_NOT_SECRET = {"forward"}  # api_key: forward means "send the client's own key": a mode, not a key


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("config", help="show the effective configuration, or check a configuration file")
    actions = parser.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="print the effective configuration (secrets masked) and cached probes")
    show.add_argument("--config", metavar="FILE", help=f"YAML configuration file (env: {config_file.CONFIG_ENV})")
    show.set_defaults(func=show_command)
    check = actions.add_parser("check", help="validate a configuration file without starting; exit 0 when valid")
    check.add_argument("file", metavar="FILE")
    check.set_defaults(func=check_command)


def mask(value: Any, name: str = "") -> Any:
    """``value`` with every credential replaced by a mask, at any depth (an upstream list's keys included)."""
    if isinstance(value, dict):
        return {key: mask(item, str(key)) for key, item in value.items()}
    if isinstance(value, list):
        return [mask(item, name) for item in value]
    if value is not None and _SECRET_NAME.search(name) and value not in _NOT_SECRET:
        return MASK
    return value


def show_command(args: argparse.Namespace) -> int:
    import yaml  # imported by the command that prints it: the CLI module is loaded by every command, serve too

    from .engine.profiles import SWITCHES
    from .probe import cache as probe_cache

    settings = load_settings(config=args.config)
    path = config_file.path_from(args.config)
    effective = settings.model_dump(mode="json")
    options = settings.engine_options()
    effective.update({name: getattr(options, name) for name in SWITCHES})
    print(f"# effective configuration: flags > environment > file ({path or 'none'}) > defaults; secrets masked;")
    print(f"# the profile switches as they apply: profile '{settings.profile}', with those set one by one on top")
    print(yaml.safe_dump(mask(effective), sort_keys=False).rstrip())
    print("---")
    print(f"# cached probe results ({probe_cache.cache_path()}), by upstream URL")
    print(yaml.safe_dump({"probes": mask(probe_cache.load())}, sort_keys=False).rstrip())
    return 0


def check_command(args: argparse.Namespace) -> int:
    try:
        load_settings(config=args.file)
    except SettingsError as exc:
        print(f"responses-bridge config check: {exc}", file=sys.stderr)
        return 1
    print(f"{args.file}: valid")
    return 0
