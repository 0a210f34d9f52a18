"""Options and fixtures every suite shares: which store the store and integration suites run on (``--store``),
the session's PostgreSQL server (tests/support/postgres.py), stopped when the session ends, and the ``store_free``
and ``runs_first`` markers.

``runs_first`` marks a module that holds its worker for minutes (a VM booted under software emulation, a venv built
from the wheel): xdist hands out modules by their number of tests, largest first, so such a module of two tests went
out last and the other workers sat idle while it ran. The collection is ordered here — the marked modules first,
then the rest by the seconds each held its worker in a measured run (tests/support/module_times.py), longest
first — and scripts/test runs xdist with ``--no-loadscope-reorder``, so this order is the one the workers get.

``store_free`` marks a module none of whose tests reads the store switch (``--store``, read through
tests/support/postgres.py's ``store_from_env``: what puts a sidecar on PostgreSQL): such a module runs the same on
either setting, so scripts/test's PostgreSQL pass leaves it out (``--skip-store-free``). The mark is checked, not
trusted: it must be the module's, its tests may not use the suite's shared sidecar (``SWITCHED_FIXTURES``), and a
test of it that reads the switch anyway, in its set-up, body or teardown, errors at its teardown.

``store_proven`` marks a module whose tests do read the switch (they start sidecars on PostgreSQL in that pass), but
whose PostgreSQL path — every line of src/responses_bridge/store/postgres those tests cover there — is covered by
the modules it names, which do run on PostgreSQL: ``pytest.mark.store_proven("tests/unit/test_x.py", ...,
reason="...")``. The PostgreSQL pass leaves it out too (``--skip-store-proven``); it still runs in the sqlite pass.
What is checked on every run: a module's mark, at least one module named and a reason; each named module exists and
runs on PostgreSQL — an integration module marked neither ``store_free`` nor ``store_proven``, or a module that
opens PostgreSQL itself (one of ``OWN_POSTGRES``'s fixtures or helpers). That the named modules cover the
marked one's lines is measured, not checked here: ``scripts/pg-coverage`` (docs/development.md).

``store_via_http_door`` marks a module whose tests run through both doors (a ``door`` or ``door_url`` of ``"http"``
and ``"envoy"``) on routes where the Envoy door reaches the store only through the HTTP door: Envoy hands the
request to the sidecar's HTTP door unread (envoy_config/routes.py: the processor off). The same test through the
HTTP door sends the same requests to the same store code, so the PostgreSQL pass runs only its HTTP-door tests
(``--skip-envoy-store-via-http-door``); both doors still run in the sqlite pass, where Envoy's own part (its routes,
buffering, errors) is what the Envoy test adds. Checked on every run: a module's mark, on a module with a test
taking a door; measured by ``scripts/pg-coverage``, which gives the Envoy-door tests coverage contexts of their
own: a marked module's Envoy-door tests covering a PostgreSQL line that nothing still running covers is a mistake
it reports.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from responses_bridge.process import startup_gc

# Hypothesis's clock checks — how fast inputs are generated (too_slow) and how long one example runs (deadline) — time
# the machine, not the code: a full run's seven workers on two cores failed test_egress_http's head test once on
# "only generated 6 valid inputs after 1.27 seconds". Every property test keeps its examples; the checks of inputs
# that do not fit a strategy (filter_too_much, data_too_large) still run. A test's own @settings still sets more.
settings.register_profile("suite", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("suite")

# the collection imports ~4,000 modules and builds ~550,000 objects that live as long as the worker: the collector
# paused meanwhile (a fifth of a worker's collection, 7.9 -> 6.3 s), and what it built frozen once it is done, so
# each full collection during the tests does not walk them again (0.3 s each, every worker) — process/startup_gc.py's
# reason
startup_gc.pause()
from responses_bridge.commands.env_check import PREFIX, TOOLING_NAMES  # noqa: E402
from responses_bridge.demo.procs import ManagedProcess  # noqa: E402
from responses_bridge.process.event_loop import EVENT_LOOP_ENV  # noqa: E402
from tests.support import module_times, zygote  # noqa: E402
from tests.support.postgres import STORE_ENV, postgres_server, postgres_url, stop_shared_server, switch_read  # noqa: E402

__all__ = ["postgres_server", "postgres_url"]

STORE_FREE = "store_free"
RUNS_FIRST = "runs_first"
STORE_PROVEN = "store_proven"
VIA_HTTP_DOOR = "store_via_http_door"
DOORS = ("door", "door_url")
"""The fixtures whose parameter is the door a test runs through (tests/integration/conftest.py)."""
OWN_POSTGRES = re.compile(r"\b(postgres_url|postgres_server|postgres_database|postgres_database_url|fresh_database|"
                          r"migrated_database|store_kinds|support\.stores|support\.replicas)\b")
"""What a module outside tests/integration uses when it runs on PostgreSQL whatever the store switch says."""
LEFT_OUT = re.compile(r"pytest\.mark\.(store_free|store_proven)\b")
SWITCHED_FIXTURES = frozenset({"sidecar"})
"""Session fixtures that start a sidecar on the switch's store: set up once, by whichever test asks first, so a
test that uses them reads the switch whether or not it was the one that started them."""

_READS = pytest.StashKey[int]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--store", choices=("sqlite", "postgres"), default=None,
                     help=f"the store the store and integration tests run on (default: ${STORE_ENV} or sqlite)")
    parser.addoption("--skip-store-free", action="store_true", default=False,
                     help=f"leave out the modules marked {STORE_FREE} (they run the same on either store)")
    parser.addoption("--skip-store-proven", action="store_true", default=False,
                     help=f"leave out the modules marked {STORE_PROVEN} (their PostgreSQL path is covered by the "
                          "modules the mark names)")
    parser.addoption("--skip-envoy-store-via-http-door", action="store_true", default=False,
                     help=f"leave out the Envoy-door tests of the modules marked {VIA_HTTP_DOOR} (the same tests "
                          "through the HTTP door run the same store code)")


def pytest_configure(config: pytest.Config) -> None:
    # the bridges the tests start, in process or not, see the settings each test gives them, never the caller's own;
    # but the loop: RESPONSES_BRIDGE_EVENT_LOOP=asyncio runs the whole suite on the standard library's loop
    kept = TOOLING_NAMES | {EVENT_LOOP_ENV}
    for name in [name for name in os.environ if name.upper().startswith(PREFIX) and name.upper() not in kept]:
        del os.environ[name]
    # the bridge's commands the tests start are forked from a process that has imported it (tests/support/zygote.py)
    ManagedProcess.spawner = zygote.popen
    chosen = config.getoption("--store")
    if chosen:  # sidecars started by the tests read it (tests/support/bridge.py)
        os.environ[STORE_ENV] = chosen


def pytest_collection_finish(session: pytest.Session) -> None:
    startup_gc.resume()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    free: list[pytest.Item] = []
    for item in items:
        if module_mark(item, STORE_FREE) is None:
            continue
        if used := SWITCHED_FIXTURES & set(item.fixturenames):
            raise pytest.UsageError(f"{item.nodeid} is in a {STORE_FREE} module but uses {sorted(used)}, which "
                                    "starts a sidecar on the store the run asks for")
        free.append(item)
    proven = _store_proven(config, items)
    via_http = _via_http_door(items)
    left_out = (free if config.getoption("--skip-store-free") else []) + (
        proven if config.getoption("--skip-store-proven") else []) + (
        via_http if config.getoption("--skip-envoy-store-via-http-door") else [])
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        dropped = {id(item) for item in left_out}
        items[:] = [item for item in items if id(item) not in dropped]
    _order_modules(items, config.getoption("--store") or os.environ.get(STORE_ENV) or "sqlite")


def module_mark(item: pytest.Item, name: str) -> pytest.Mark | None:
    """The mark ``name`` of the test's module, or None; a UsageError where a test (not its module) carries it: these
    marks say what a whole module does."""
    marks = list(item.iter_markers_with_node(name))
    if not all(isinstance(node, pytest.Module) for node, _ in marks):
        raise pytest.UsageError(f"{item.nodeid}: {name} marks a whole module (its pytestmark), not a test")
    return marks[0][1] if marks else None


def _store_proven(config: pytest.Config, items: list[pytest.Item]) -> list[pytest.Item]:
    """The items of the modules marked ``store_proven``, their marks checked (the module docstring says how)."""
    proven: list[pytest.Item] = []
    checked: set[str] = set()
    for item in items:
        mark = module_mark(item, STORE_PROVEN)
        if mark is None:
            continue
        proven.append(item)
        module = item.nodeid.partition("::")[0]
        if module in checked:
            continue
        checked.add(module)
        if item.get_closest_marker(STORE_FREE) is not None:
            raise pytest.UsageError(f"{module}: marked both {STORE_FREE} and {STORE_PROVEN}: one says it never reads "
                                    "the store switch, the other that it does")
        if not mark.args or not str(mark.kwargs.get("reason", "")).strip():
            raise pytest.UsageError(f"{module}: {STORE_PROVEN} names the modules that run its PostgreSQL path "
                                    '(positional) and why (reason="...")')
        for named in mark.args:
            _check_proof(config.rootpath, module, str(named))
    return proven


def through_envoy(item: pytest.Item) -> bool:
    """Whether the test runs through the Envoy door (its ``door`` or ``door_url`` is ``"envoy"``)."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    return any(params.get(name) == "envoy" for name in DOORS)


def _via_http_door(items: list[pytest.Item]) -> list[pytest.Item]:
    """The Envoy-door tests of the modules marked ``store_via_http_door``, the marks checked (the module docstring
    says how)."""
    envoy: list[pytest.Item] = []
    with_door: dict[str, bool] = {}
    for item in items:
        if module_mark(item, VIA_HTTP_DOOR) is None:
            continue
        module = item.nodeid.partition("::")[0]
        with_door[module] = with_door.get(module, False) or bool(set(DOORS) & set(item.fixturenames))
        if through_envoy(item):
            envoy.append(item)
    if unused := sorted(module for module, door in with_door.items() if not door):
        raise pytest.UsageError(f"{', '.join(unused)}: marked {VIA_HTTP_DOOR}, but no test of it takes a door "
                                f"({' or '.join(DOORS)})")
    return envoy


def _check_proof(root: Path, module: str, named: str) -> None:
    path = root / named
    if named == module or not path.is_file() or not path.name.startswith("test_"):
        raise pytest.UsageError(f"{module}: {STORE_PROVEN} names {named!r}, which is not another test module")
    text = path.read_text()
    if OWN_POSTGRES.search(text):
        return  # on PostgreSQL in the sqlite pass, whatever the switch says
    integration = named.startswith("tests/integration/")
    if integration and not LEFT_OUT.search(text):
        return  # in the PostgreSQL pass
    why = "the PostgreSQL pass leaves it out" if integration else "it does not open PostgreSQL itself"
    raise pytest.UsageError(f"{module}: {STORE_PROVEN} names {named}, which runs on PostgreSQL in neither pass "
                            f"({why})")


def _order_modules(items: list[pytest.Item], store: str) -> None:
    """The modules marked ``runs_first`` first, then every other by the seconds it held its worker in a measured
    run, longest first (tests/support/module_times.py; a stable sort: tests keep their order within a module)."""
    def module(item: pytest.Item) -> str:
        return item.nodeid.partition("::")[0]

    seconds = module_times.estimates(module_times.load(store), Counter(map(module, items)))
    first = {module(item) for item in items if item.get_closest_marker(RUNS_FIRST) is not None}
    items.sort(key=lambda item: (module(item) not in first, -seconds[module(item)]))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_READS] = switch_read()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> object:
    result = yield
    if item.get_closest_marker(STORE_FREE) is not None and switch_read() != item.stash.get(_READS, switch_read()):
        raise AssertionError(f"{item.nodeid} read the store switch (it starts a sidecar through "
                             f"tests/support/bridge.py, or calls store_from_env), but its module is marked "
                             f"{STORE_FREE}: drop the mark, or the PostgreSQL pass of scripts/test leaves out a test "
                             "that would run differently there")
    return result


def pytest_sessionfinish(session: pytest.Session) -> None:
    stop_shared_server()
