"""The ``responses-bridge`` command.

Each subcommand lives with the module that does its work; this file only wires them together, so adding a
command never means touching another command's code.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from .process import startup_gc
from .settings_error import SettingsError

COMMAND_MODULES = {"serve": ".serve", "fake-upstream": None, "envoy-config": ".envoy_config", "demo": ".demo.command",
                   "config": ".commands.config", "probe": ".probe.command", "keys": ".commands.keys",
                   "batches": ".commands.batches", "doctor": ".commands.doctor",
                   "desktop-url": ".commands.desktop_url", "bench": None}
"""Each command, in ``--help``'s order, and the module whose ``add_parser`` registers it (None: this file's).
A command's module is imported only when that command runs, or when the commands are listed: a process started
for one (every ``serve`` and ``fake-upstream`` of a test run, each ``keys`` call) does not load the others' —
the demo's and the benchmark's imports alone were a fifth of ``serve``'s start."""


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; given the arguments it will parse, only the command they name (when they name
    one), which parses them the same."""
    parser = argparse.ArgumentParser(
        prog="responses-bridge",
        description="The Open Responses API in front of any Chat Completions backend.",
    )
    parser.add_argument("--version", action=_PrintVersion)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = _named_command(argv)
    for name, module in COMMAND_MODULES.items():
        if chosen is None or name == chosen:
            _add_command(commands, name, module)
    _complete(parser)
    for name in SETTINGS_COMMANDS:
        if name in commands.choices:
            _add_strict_env(commands.choices[name])
    return parser


def _named_command(argv: Sequence[str] | None) -> str | None:
    """The command ``argv`` runs, when its first word is one (options before it are the top level's: --help,
    --version, which list or need no command)."""
    if not argv or argv[0] not in COMMAND_MODULES:
        return None
    return argv[0]


def _add_command(commands: argparse._SubParsersAction, name: str, module: str | None) -> None:
    if name == "fake-upstream":
        _add_fake_upstream(commands)
    elif name == "bench":
        _add_bench(commands)
    elif module is not None:
        importlib.import_module(module, __package__).add_parser(commands)


SETTINGS_COMMANDS = ("serve", "envoy-config", "demo", "config", "probe", "keys", "batches", "doctor")
"""The commands that read the sidecar's settings: the environment is checked for mistyped names before each."""


def _add_strict_env(parser: argparse.ArgumentParser) -> None:
    """``--strict-env`` on the command, or on each of its actions (``config check --strict-env``)."""
    subcommands = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    if not subcommands:
        parser.add_argument("--strict-env", action="store_true",
                            help="a RESPONSES_BRIDGE_* variable (or a near miss of the prefix) that no setting reads "
                            "is an error, not a warning (env: RESPONSES_BRIDGE_STRICT_ENV=1)")
    for action in subcommands:
        for child in action.choices.values():
            _add_strict_env(child)


def _complete(parser: argparse.ArgumentParser) -> None:
    """Every command, at any depth, gets what a user tries first: a description on its own ``--help`` (the line
    its parent lists, when it was given no other), and a command that needs an action (``responses-bridge``,
    ``config``, ``keys``) given none prints its help instead of argparse's one-line "arguments are required"."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        action.required = False
        parser.set_defaults(func=functools.partial(_print_help, parser))
        listed = {choice.dest: choice.help for choice in action._choices_actions}
        for name, child in action.choices.items():
            line = listed.get(name)
            if child.description is None and line:
                child.description = f"{line[0].upper()}{line[1:]}."
            _complete(child)


def _print_help(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    parser.print_help(sys.stderr)
    return 2


FAKE_SCRIPT_HELP = """\
The conversation is the script: no model, no randomness. The answer to the last user message is
"Echo: <its text>" (after a tool result, "Tool result: <it>"), streamed one chunk per word.
Bracketed directives anywhere in that message change it, and are not echoed:
  call NAME            call the offered tool NAME (several mentions: parallel calls);
                       [args=JSON] gives the calls these arguments, [then=NAME] the next turn's call
  [think]              reasoning first ([think_field=reasoning] names its field as newer vLLM does)
  [chunks=N]           exactly N content chunks   [delay=MS] between chunks
  [header_delay=MS]    time to first token        [stall=MS] before anything, headers too
  [error=CODE]         answer that HTTP status (400-599) with an OpenAI error body
  [cut=K]              drop the connection after K chunks     [garbage] a non-JSON event
  [refuse] [length] [filter]    a refusal, or finish_reason length / content_filter
  [context=N]          a model with an N-token context window (vLLM's 400 past it)
A malformed directive ([chunks=abc]) is a 400, so a typo in a test is loud. Every directive, and
what each route answers: the docstring of responses_bridge/demo/fake_upstream.py."""


def _add_fake_upstream(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("fake-upstream", help="run the deterministic Chat Completions server used by "
                                 "the demo and the tests", epilog=FAKE_SCRIPT_HELP,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--chunk-count", type=int, default=None,
                        help="content chunks per streamed answer (default: one per word)")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between streamed chunks")
    parser.add_argument("--tool-topics", action="store_true",
                        help="also call an offered tool whose name the user's message mentions (e.g. 'weather' "
                        "calls get_weather), for test suites written for real models")
    parser.add_argument("--quirks", default=None, help="put on a real backend's departures from OpenAI: "
                        "'llamacpp' (500 on the developer role, 400 on content null beside tool_calls, ...) or "
                        "comma-separated quirk names, see demo/fake_quirks.py")
    parser.add_argument("--native", action="store_true",
                        help="also serve POST /v1/responses as a stateless backend does (vLLM, Ollama, llama.cpp)")
    parser.add_argument("--embedding-delay", type=float, default=0.0,
                        help="seconds before each /v1/embeddings answer (a slow embedding model)")
    parser.add_argument("--header-delay", type=float, default=0.0,
                        help="seconds before the headers of each chat answer (a model's time to first token; "
                        "[header_delay=MS] in a message overrides it)")
    parser.add_argument("--no-images", action="store_true",
                        help="no POST /v1/images/generations (an upstream without the Images API: a 404)")

    def run(args: argparse.Namespace) -> int:
        from .demo.fake_server import run as run_fake

        run_fake(args.host, args.port, chunk_count=args.chunk_count, chunk_delay=args.chunk_delay,
                 tool_topics=args.tool_topics, quirks=args.quirks, native=args.native,
                 embedding_delay=args.embedding_delay, header_delay=args.header_delay, images=not args.no_images)
        return 0

    parser.set_defaults(func=run)


def _add_bench(commands: argparse._SubParsersAction) -> None:
    """The benchmark, which ships only in a source checkout (its top-level ``tools/``, beside ``src/``); an installed
    package says where it is instead."""
    checkout = Path(__file__).resolve().parents[2]  # src/responses_bridge/cli.py -> the checkout, when it is one
    if not (checkout / "tools" / "bench" / "latency" / "bench.py").is_file():
        _add_checkout_only(commands, "bench", "measure the bridge's latency and throughput against the upstream",
                           "scripts/bench latency")
        return
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    from tools.bench.latency import bench

    bench.add_parser(commands)


def _add_checkout_only(commands: argparse._SubParsersAction, name: str, purpose: str, script: str) -> None:
    """A development command the installed package does not carry: it says so, in one line, and where it is
    (``script``: the checkout's command that runs it)."""
    # '+' as its option prefix: every argument given (its real options among them) is taken as is, unread
    parser = commands.add_parser(name, help=f"{purpose} (in a source checkout only)", add_help=False,
                                 prefix_chars="+")

    def run(args: argparse.Namespace) -> int:
        print(f"responses-bridge {name}: development tooling, not in the installed package; run it from a source "
              f"checkout of responses-bridge ({script})", file=sys.stderr)
        return 2

    parser.set_defaults(func=run)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)


class _PrintVersion(argparse.Action):
    """argparse's ``version`` action, the version read from the package's metadata only when asked for (reading
    it loads importlib.metadata, which no command needs)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str = "show program's version number and exit") -> None:
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        print(f"{parser.prog} {_version()}")
        parser.exit()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("responses-bridge")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # this process is the command: its start runs without the cyclic collector (process/startup_gc.py)
        startup_gc.pause()
    try:
        return _run(argv)
    finally:
        startup_gc.resume()


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser(sys.argv[1:] if argv is None else argv).parse_args(argv)
    if args.command != "serve":  # serve resumes it once its doors are open (serve.py); the others have started
        startup_gc.resume()
    try:
        if hasattr(args, "strict_env"):  # a settings command: mistyped variable names first (commands/env_check.py)
            from .commands.env_check import check_environment

            for warning in check_environment(args.strict_env):
                print(f"responses-bridge {_command_name(args)}: warning: {warning}", file=sys.stderr)
        return int(args.func(args) or 0)
    except SettingsError as exc:  # one line naming the flag, variable or file (config/errors.py), no traceback
        print(f"responses-bridge {_command_name(args)}: {exc}", file=sys.stderr)
        return 2


def _command_name(args: argparse.Namespace) -> str:
    """``keys list``, ``config show``: the command with its action, when it has one."""
    action = getattr(args, f"{(args.command or '').replace('-', '_')}_command", None)
    return f"{args.command} {action}" if isinstance(action, str) else args.command


if __name__ == "__main__":
    sys.exit(main())
