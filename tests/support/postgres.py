"""A real PostgreSQL server (with pgvector) for the tests, started from the ``pgserver`` wheel's binaries.

The wheel ships PostgreSQL and the ``vector`` extension; we run its ``initdb`` and ``pg_ctl`` ourselves so the
server listens on 127.0.0.1 (TCP, as a deployment's replicas reach their database) with password authentication
(a wrong password must fail the bridge's start), in a temporary directory removed afterwards. PostgreSQL refuses
to run as root, so as root the cluster belongs to the wheel's own unprivileged user (``pgserver`` creates it).

One server per test session (:func:`postgres_server`); each test gets a fresh database of its own from
:func:`postgres_url` (``CREATE DATABASE`` is fast: a copy of template1). Durability settings are off: the tests
never crash the server, and the store's correctness does not depend on fsync.

``RESPONSES_BRIDGE_TEST_STORE=postgres`` (or ``pytest --store=postgres``) puts the sidecars the tests start
(:func:`sidecar_env`) on PostgreSQL: that switch is what the second pass of scripts/test turns. Every reading of it
goes through :func:`store_from_env` and is noted (:func:`switch_read`), so tests/conftest.py can hold a module marked
``store_free`` (left out of that pass: it runs the same on either setting) to never reading it.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import shutil
import subprocess
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from responses_bridge.demo.procs import free_port

USER = "bridge_test"
PASSWORD = "bridge-test-password"  # a test cluster on loopback, gone after the session
STORE_ENV = "RESPONSES_BRIDGE_TEST_STORE"
_databases = itertools.count(1)


class ServerUnavailable(RuntimeError):
    """No PostgreSQL server can be started on this machine (the reason is the tests' skip reason)."""


@dataclass
class PostgresServer:
    """A running cluster: its superuser URL base, port, data directory and version."""

    host: str
    port: int
    directory: Path
    version: str
    start_seconds: float
    system_user: str | None

    def url(self, database: str = "postgres", *, password: str = PASSWORD) -> str:
        return f"postgresql://{USER}:{password}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """A fresh, empty database; its URL."""
        name = name or f"test_{os.getpid()}_{next(_databases)}"
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def dump(self, database: str) -> bytes:
        """Every row of ``database`` as ``pg_dump --data-only`` writes it: what anyone reading the database sees."""
        env = {**os.environ, "PGPASSWORD": PASSWORD}
        done = subprocess.run([str(_bin("pg_dump")), "--data-only", "-h", self.host, "-p", str(self.port), "-U", USER,
                               "-d", database], env=env, capture_output=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"pg_dump failed: {done.stderr.decode(errors='replace').strip()}")
        return done.stdout

    def psql(self, sql: str, database: str = "postgres") -> str:
        """``sql`` run by psql (given on its stdin, so a backslash command such as ``\\gexec`` may end it)."""
        env = {**os.environ, "PGPASSWORD": PASSWORD}
        done = subprocess.run([str(_bin("psql")), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h", self.host,
                               "-p", str(self.port), "-U", USER, "-d", database, "-f", "-"], input=sql,
                              env=env, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def stop(self) -> None:
        _note_server_cpu(self.directory / "data")
        subprocess.run([str(_bin("pg_ctl")), "-D", str(self.directory / "data"), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60, check=False, user=self.system_user)
        shutil.rmtree(self.directory, ignore_errors=True)


SERVER_CPU_LOG = "PG_TEST_CPU_LOG"  # not RESPONSES_BRIDGE_*: tests/conftest.py clears those
"""A file to which each server adds, as it stops, the CPU-seconds (user + system) its processes used: they are not
the tests' children (pg_ctl detaches the server), so a measure of the tests' process tree leaves them out."""


def _note_server_cpu(data: Path) -> None:
    log = os.environ.get(SERVER_CPU_LOG)
    if not log:
        return
    try:
        pid = (data / "postmaster.pid").read_text().split()[0]
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        ticks = sum(int(fields[index]) for index in (11, 12, 13, 14))  # utime stime cutime cstime (exited backends)
        live = 0
        for child in Path("/proc").iterdir():  # the backends and workers still running
            if child.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    stat = (child / "stat").read_text().rpartition(")")[2].split()
                    if stat[1] == pid:
                        live += int(stat[11]) + int(stat[12])
    except (OSError, IndexError, ValueError):
        return
    with open(log, "a") as file:
        file.write(f"{(ticks + live) / os.sysconf('SC_CLK_TCK'):.2f}\n")


def _bin(name: str) -> Path:
    try:
        with warnings.catch_warnings():  # its import asks platformdirs for a runtime directory we never use
            warnings.simplefilter("ignore")
            from pgserver._commands import POSTGRES_BIN_PATH
    except ImportError as exc:  # the test extras install it; a bare checkout may not have it
        raise ServerUnavailable(f"the pgserver wheel is not installed ({exc})") from None
    return Path(POSTGRES_BIN_PATH) / name


def start_server() -> PostgresServer:
    """initdb + pg_ctl start on a free loopback port, in a new temporary directory."""
    started = time.perf_counter()
    postgres = _bin("postgres")
    if not postgres.exists():
        raise ServerUnavailable(f"no PostgreSQL binary at {postgres}")
    directory = Path(tempfile.mkdtemp(prefix="responses-bridge-pg-"))
    system_user = None
    if os.name == "posix" and os.geteuid() == 0:
        system_user = _unprivileged_owner(directory)
    try:
        data = directory / "data"
        pwfile = directory / "pw"
        pwfile.write_text(PASSWORD)
        if system_user is not None:
            shutil.chown(pwfile, system_user)
        _run([str(_bin("initdb")), "-D", str(data), "-U", USER, f"--pwfile={pwfile}", "--auth=scram-sha-256",
              "--encoding=UTF8", "--no-sync"], system_user)
        port = free_port()
        options = (f"-h 127.0.0.1 -p {port} -k {directory} -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c max_connections=400 -c shared_buffers=64MB")
        _run([str(_bin("pg_ctl")), "-D", str(data), "-w", "-t", "60", "-o", options, "-l",
              str(directory / "log"), "start"], system_user)
        version = subprocess.run([str(postgres), "--version"], capture_output=True, text=True,
                                 check=True).stdout.strip()
    except BaseException:
        log = directory / "log"
        detail = log.read_text()[-2000:] if log.exists() else ""
        shutil.rmtree(directory, ignore_errors=True)
        if detail:
            raise ServerUnavailable(f"PostgreSQL did not start: {detail}") from None
        raise
    return PostgresServer("127.0.0.1", port, directory, version, time.perf_counter() - started, system_user)


def _unprivileged_owner(directory: Path) -> str:
    """As root: the wheel's own unprivileged user owns the cluster, and can read the binaries."""
    import stat

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver import utils

    user = "pgserver"
    utils.ensure_user_exists(user)
    binaries = _bin("postgres").parent
    utils.ensure_prefix_permissions(directory)
    utils.ensure_prefix_permissions(binaries)
    read = stat.S_IRGRP | stat.S_IROTH
    utils.ensure_folder_permissions(binaries, stat.S_IXGRP | stat.S_IXOTH | read)
    utils.ensure_folder_permissions(binaries.parent / "lib", read)
    utils.ensure_folder_permissions(binaries.parent / "share", read)
    shutil.chown(directory, user)
    return user


def _run(command: list[str], user: str | None) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, user=user)
    if done.returncode != 0:
        raise ServerUnavailable(f"{Path(command[0]).name} failed: {(done.stderr or done.stdout).strip()[-2000:]}")


# -- pytest --------------------------------------------------------------------------------------------------------


def store_kind(config: pytest.Config) -> str:
    """``sqlite`` or ``postgres``: which store the suites that follow the switch run on."""
    _note_switch_read()
    chosen = config.getoption("--store", default=None) or os.environ.get(STORE_ENV) or "sqlite"
    if chosen not in ("sqlite", "postgres"):
        raise pytest.UsageError(f"--store / {STORE_ENV} must be sqlite or postgres, not {chosen!r}")
    return str(chosen)


_started: PostgresServer | None = None
_failed: str | None = None


def shared_server() -> PostgresServer:
    """The session's server, started on first use (one per process); raises ServerUnavailable."""
    global _started, _failed
    if _started is None:
        if _failed is not None:
            raise ServerUnavailable(_failed)
        try:
            _started = start_server()
        except (ServerUnavailable, OSError, subprocess.SubprocessError) as exc:
            _failed = str(exc)
            raise ServerUnavailable(_failed) from None
    return _started


def stop_shared_server() -> None:
    global _started
    if _started is not None:
        _started.stop()
        _started = None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server; the test is skipped, with the reason, only if none can be started."""
    try:
        server = shared_server()
    except ServerUnavailable as exc:
        pytest.skip(f"no PostgreSQL server could be started: {exc}")
    yield server


@contextlib.contextmanager
def fresh_database(server: PostgresServer, prefix: str = "test") -> Iterator[str]:
    """A new, empty database of ``server`` (its URL), dropped on exit."""
    name = f"{prefix}_{os.getpid()}_{next(_databases)}"
    url = server.create_database(name)
    try:
        yield url
    finally:
        server.drop_database(name)


_templates: dict[int, str] = {}
"""By server port: the database this process migrated once, which :func:`migrated_database` and :func:`sidecar_env`
copy."""


def migrated_template(server: PostgresServer) -> str:
    """The name of a database at the schema's latest version, migrated once per process and server and never
    connected to again, so ``CREATE DATABASE … TEMPLATE`` (a file copy) can copy it. Migrated on a thread of its own:
    callers are sync code running inside the tests' event loop."""
    if server.port not in _templates:
        import asyncio
        import threading

        from responses_bridge.store.postgres import PostgresDatabase  # the store's import only where it is used

        template = f"migrated_{os.getpid()}"
        server.create_database(template)

        async def migrate() -> None:
            async with PostgresDatabase(server.url(template)):
                pass  # migrated on open; closed (no session left on it) before it is copied

        failure: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(migrate())
            except BaseException as exc:  # noqa: BLE001 — raised again in the caller's thread
                failure.append(exc)

        thread = threading.Thread(target=run, name="migrate-template")
        thread.start()
        thread.join()
        if failure:
            server.drop_database(template)
            raise failure[0]
        _templates[server.port] = template
    return _templates[server.port]


@contextlib.asynccontextmanager
async def migrated_database(server: PostgresServer, prefix: str = "test") -> AsyncIterator[str]:
    """A new database already at the schema's latest version (its URL), dropped on exit: a copy (``CREATE DATABASE
    … TEMPLATE``, a file copy) of one this process migrated once, instead of a migration per test (0.5 s on a quiet
    machine, 3 s on a loaded one). For the tests whose subject is what the store does; how the schema comes to be
    is tested on empty databases (:func:`fresh_database`: tests/unit/test_postgres_database.py,
    tests/integration/test_postgres_start.py, the replicas opening one together)."""
    template = migrated_template(server)
    name = f"{prefix}_{os.getpid()}_{next(_databases)}"
    server.psql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh database of the session's server, dropped after the test."""
    with fresh_database(postgres_server) as url:
        yield url


# -- the sidecar on PostgreSQL ---------------------------------------------------------------------------------------


_switch_reads = 0


def _note_switch_read() -> None:
    global _switch_reads
    _switch_reads += 1


def switch_read() -> int:
    """How many times the store switch was read in this process so far (a test reads it when a count taken
    before its set-up differs from one taken after its teardown)."""
    return _switch_reads


def store_from_env() -> str:
    """``postgres`` when the run asks for PostgreSQL (``--store`` sets the variable for the whole session)."""
    _note_switch_read()
    return os.environ.get(STORE_ENV) or "sqlite"


def database_name(db_path: str) -> str:
    """The PostgreSQL database a sidecar started with ``--db db_path`` uses when the run puts it there."""
    return "db_" + hashlib.sha256(os.path.abspath(db_path).encode()).hexdigest()[:24]


def sidecar_env(db_path: str) -> dict[str, str]:
    """The environment that puts a sidecar on PostgreSQL when the run asks for it; empty on SQLite.

    A sidecar's ``--db`` path names its database: a sidecar restarted with the same path finds the same database
    (as a restarted replica finds the shared one), and two sidecars with different paths never share state.
    ``:memory:`` always gets a new database.

    A new database is a copy of :func:`migrated_template`: a sidecar finds its schema at the latest version, as a
    replica does after the first one started, instead of migrating it (0.5 s of CPU on a quiet machine, a few on a
    loaded one, for each of the PostgreSQL pass's several hundred sidecars). Migrating an empty database is what
    tests/unit/test_postgres_database.py, tests/integration/test_postgres_start.py and the replicas' tests
    (:func:`fresh_database`) test."""
    if store_from_env() != "postgres":
        return {}
    try:
        server = shared_server()
    except ServerUnavailable as exc:
        pytest.skip(f"no PostgreSQL server could be started: {exc}")
    name = f"mem_{os.getpid()}_{next(_databases)}" if db_path == ":memory:" else database_name(db_path)
    template = migrated_template(server)
    # one psql for "create it unless it is there" (a sidecar restarted on its path finds its database)
    server.psql(f"SELECT format('CREATE DATABASE %I TEMPLATE %I', '{name}', '{template}') "
                f"WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '{name}') \\gexec")
    return {"RESPONSES_BRIDGE_DATABASE_URL": server.url(name)}
