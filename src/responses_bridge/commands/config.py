"""``responses-bridge config show`` and ``responses-bridge config check FILE``.

``show`` prints the configuration the sidecar would start with (flags > environment > file > defaults) as YAML,
secrets masked, then the engine switches its profile resolves to, the upstreams it serves (name, URL, mode,
profile: with an ``upstreams`` list, not the unused ``upstream`` default) and the cached probe results of those
upstreams, from the deployment's own cache (beside its database). ``check`` reads
one file the way ``serve --config`` would and says whether it is valid, every problem at once
(config_check.py), without starting anything.
"""

from __future__ import annotations

import argparse
import sys

from ..config import file as config_file
from ..config.settings import load_settings
from ..redact import MASK, mask

__all__ = ["MASK", "add_parser", "check_command", "mask", "show_command"]


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("config", help="show the effective configuration, or check a configuration file")
    actions = parser.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="print the effective configuration (secrets masked) and cached probes")
    show.add_argument("--config", metavar="FILE", help=f"YAML configuration file (env: {config_file.CONFIG_ENV})")
    show.set_defaults(func=show_command)
    check = actions.add_parser("check", help="validate a configuration file without starting; exit 0 when valid")
    check.add_argument("file", metavar="FILE")
    check.set_defaults(func=check_command)


def show_command(args: argparse.Namespace) -> int:
    import yaml  # imported by the command that prints it: the CLI module is loaded by every command, serve too

    from ..engine.responses.profiles import SWITCHES
    from ..probe import cache as probe_cache
    from .upstream_check import configured_upstreams

    settings = load_settings(config=args.config)
    path = config_file.path_from(args.config)
    try:
        upstreams = configured_upstreams(settings, config_path=path)
    except ValueError as exc:  # an api_key_env naming an unset variable: serve would not start either
        print(f"responses-bridge config show: {exc}", file=sys.stderr)
        return 1
    effective = settings.model_dump(mode="json")
    if settings.upstreams:  # the list serves every model: the lone upstream's default is not used
        del effective["upstream"]
    options = settings.engine_options()
    effective.update({name: getattr(options, name) for name in SWITCHES})
    print(f"# effective configuration: flags > environment > file ({path or 'none'}) > defaults; secrets masked;")
    print(f"# the profile switches as they apply: profile '{settings.profile}', with those set one by one on top")
    print(yaml.safe_dump(mask(effective), sort_keys=False).rstrip())
    print("---")
    cache = probe_cache.cache_path(settings.db_path())
    print("# the upstreams served, where each was configured, and their cached probe results by URL "
          f"({cache or 'none: an in-memory database keeps none'})")
    served = [{**entry.described(), "configured": entry.configured} for entry in upstreams]
    probes = probe_cache.load(cache, [entry.url for entry in upstreams])
    print(yaml.safe_dump({"serving": served, "probes": mask(probes)}, sort_keys=False).rstrip())
    return 0


def check_command(args: argparse.Namespace) -> int:
    """Every problem of the file, one a line (config_check.py), exit status 1; else ``FILE: valid``."""
    from .config_check import check_file

    report = check_file(args.file)
    for line in report.problems:
        print(f"responses-bridge config check: {line}", file=sys.stderr)
    for line in report.warnings:
        print(f"responses-bridge config check: warning: {line}", file=sys.stderr)
    if report.problems:
        return 1
    print(f"{args.file}: valid")
    return 0
