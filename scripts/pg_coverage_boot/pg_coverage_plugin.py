"""pytest plugin of scripts/pg-coverage (``-p pg_coverage_plugin``): the coverage context is the test module running
(with ``[envoy]`` after it for a test through the Envoy door).

Each worker names a file of its own (``PG_COVERAGE_CONTEXT_FILE``, inherited by every process it starts) and writes
the module's node id there as the module's first test is set up (before its fixtures, so a shared sidecar started
then is the module's); sitecustomize.py's thread in those processes follows it. ``PG_COVERAGE_PREFIX`` tells the
runs apart (``postgres:`` for the PostgreSQL pass, ``sqlite:`` for the sqlite pass's own PostgreSQL tests).
"""

from __future__ import annotations

import os

import coverage
import pytest

_current: str | None = None
ENVOY = "[envoy]"


def pytest_configure(config: pytest.Config) -> None:
    folder = os.environ.get("PG_COVERAGE_CONTEXT_DIR")
    if folder:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        os.environ["PG_COVERAGE_CONTEXT_FILE"] = os.path.join(folder, f"{worker}-{os.getpid()}")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    global _current
    from tests.conftest import through_envoy  # the suite's conftest, loaded by now

    # a test through the Envoy door a context of its own (``[envoy]`` after its module), so that the report can
    # tell what a store_via_http_door module's Envoy-door tests alone cover
    context = (os.environ.get("PG_COVERAGE_PREFIX", "") + item.nodeid.partition("::")[0]
               + (ENVOY if through_envoy(item) else ""))
    if context == _current or "PG_COVERAGE_CONTEXT_FILE" not in os.environ:
        return
    _current = context
    with open(os.environ["PG_COVERAGE_CONTEXT_FILE"], "w") as file:
        file.write(context)
    cov = coverage.Coverage.current()
    if cov is not None:
        cov.switch_context(context)
