"""The packages of an agent session's ``openai_hosted`` environment (``packages.python`` and ``packages.npm``),
installed once at its start and seen read-only by every later command of its container.

A container keeps only its ``/mnt/data`` files from one call to the next (each call is a fresh sandbox over them),
so the packages cannot simply stay where they were installed. The install is one sandbox call of its own in the
container (its memory tier, the call's time and output limits): ``pip install --target`` and ``npm install
--prefix`` into ``/mnt/data/.packages`` of that call, through the egress proxy under a policy allowing the
operator's index hosts and nothing else (``RESPONSES_BRIDGE_PACKAGE_INDEXES``; the container's own policy, which
the model's commands run under, is not changed). The tree it leaves is zipped into a blob of the container's
(``StoredContainer.packages_blob``, deleted with it), never written back as the container's files: not published
as artifacts, not counted among a call's new files. Every later call of the container gets it unpacked once per
process (a cache in the bridge's scratch directory, as skills are) and bound read-only at :data:`PACKAGES_DIR`,
where the sandbox's environment points ``PYTHONPATH``, ``NODE_PATH`` and ``PATH`` on both backends
(sandbox/command.py, sandbox/agent_sandbox/session.py).

What an install may leave is bounded: at most the container's bytes and 50,000 files (package_trees.py); a
symbolic link is kept only when it points inside the tree (npm's ``node_modules/.bin``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from ....protocol.containers.environment_packages import PackageIndexes
from ....protocol.containers.environments import HostedPlan
from ....protocol.errors import invalid_request
from ....sandbox import Sandbox, SandboxBusy, SandboxUnavailable
from ....sandbox.backend import SandboxBackend
from ....sandbox.egress.policy import NetworkPolicy, parse_policy
from ....sandbox.shell import ShellJob, run_shell
from ....store.records import StorageLimitExceeded, StoredContainer
from ...containers.containers import ContainerService
from ...containers.package_trees import InstallFailed, read_modes, unpack_tree, zip_tree
from ...containers.tree_cache import TreeCache, TreeEntry
from ...files.files import new_file_id

log = structlog.get_logger(__name__)

SETTING = "RESPONSES_BRIDGE_PACKAGE_INDEXES"
PACKAGES_DIR = "/mnt/packages"
INSTALL_DIR = "/mnt/data/.packages"  # in the install's own call only
MODES_FILE = "/mnt/data/.packages-modes"
MAX_OUTPUT = 4000  # characters of the install's output kept for its error
CACHE_BUDGET = 1 << 30
PREFIX = "packages-"
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"  # where a bubblewrap call's commands look (sandbox/command.py)
CHUNK = 1 << 20


def install_command(python: tuple[str, ...], npm: tuple[str, ...], indexes: PackageIndexes,
                    system: tuple[str, ...] = ()) -> str:
    """The one shell command of the install call (each entry one quoted argument, checked before:
    protocol/containers/environment_packages.py)."""
    steps = ["set -e", f"mkdir -p {INSTALL_DIR}/python {INSTALL_DIR}/npm /mnt/data/.tmp",
             "export TMPDIR=/mnt/data/.tmp"]  # not /tmp: a wheel unpacks there, and /tmp is small
    if system:
        steps += system_steps(system, indexes.debian)
    if python:
        where = [f"--index-url={shlex.quote(indexes.python[0])}",
                 *(f"--extra-index-url={shlex.quote(url)}" for url in indexes.python[1:])]
        steps.append(" ".join(["python3 -m pip install --no-input --disable-pip-version-check --no-cache-dir",
                               "--no-warn-script-location --progress-bar=off --quiet",
                               f"--target={INSTALL_DIR}/python", *where, *map(shlex.quote, python)]))
    if npm:
        assert indexes.npm is not None
        steps.append(" ".join(["npm install --no-audit --no-fund --no-update-notifier --loglevel=error",
                               f"--prefix={INSTALL_DIR}/npm", "--cache=/mnt/data/.tmp/npm",
                               f"--registry={shlex.quote(indexes.npm)}", *map(shlex.quote, npm)]))
    # what a backend's file transfer may not carry back (a pod's file API: no mode, no link): the scripts'
    # executable bits and the links (npm's node_modules/.bin), as NUL-separated records beside the tree, the
    # links then removed (a pod's file API cannot read one back; _zip_tree makes them again)
    steps.append(f"cd {INSTALL_DIR} && (find . -type f -perm /111 -printf 'x\\0%P\\0' "
                 f"&& find . -type l -printf 'l\\0%P\\0%l\\0') > {MODES_FILE} && find . -type l -delete")
    return "\n".join(steps)


def system_steps(system: tuple[str, ...], sources: tuple[str, ...]) -> list[str]:
    """Debian packages fetched with ``apt-get download`` (the named packages alone: resolving dependencies needs the
    system's package database, which the sandbox does not see) from the operator's repositories, as the sandbox's
    user with apt's own state under ``/mnt/data/.tmp/apt``, and unpacked with ``dpkg-deb -x`` into
    ``system/`` of the tree (no maintainer script runs: nothing runs as root)."""
    apt = "/mnt/data/.tmp/apt"
    lines = " ".join(shlex.quote(f"deb {line}") for line in sources)
    options = [f"-o Dir::Etc={apt}/etc", f"-o Dir::Etc::SourceList={apt}/etc/sources.list",
               f"-o Dir::Etc::SourceParts={apt}/etc/none", f"-o Dir::State={apt}/state",
               "-o Dir::State::status=/dev/null", f"-o Dir::Cache={apt}/cache", "-o Debug::NoLocking=1",
               "-o Acquire::Retries=1"]
    if any(line.startswith("[trusted=yes]") for line in sources):  # the operator's unsigned repository
        options.append("-o Acquire::AllowInsecureRepositories=true")
    apt_get = " ".join(["apt-get -q", *options])
    return [f"mkdir -p {apt}/etc/none {apt}/state/lists/partial {apt}/cache/archives/partial {apt}/debs "
            f"{INSTALL_DIR}/system",
            f"printf '%s\\n' {lines} > {apt}/etc/sources.list",
            f"{apt_get} update >&2",
            f"cd {apt}/debs && {apt_get} download {' '.join(map(shlex.quote, system))} >&2 && cd /mnt/data",
            f"for deb in {apt}/debs/*.deb; do dpkg-deb -x \"$deb\" {INSTALL_DIR}/system; done",
            f"rm -rf {apt}"]


class EnvironmentPackages:
    """Installs an environment's packages in its container and lays them out for the container's later calls."""

    def __init__(self, containers: ContainerService, sandbox: SandboxBackend, indexes: PackageIndexes | None, *,
                 workdir: Path | None = None, cache_bytes: int = CACHE_BUDGET) -> None:
        self.containers = containers
        self.sandbox = sandbox
        self.indexes = indexes
        self._trees = TreeCache(PREFIX, workdir, cache_bytes)

    def check(self, plan: HostedPlan) -> None:
        """A 400 naming the setting (and the field) where the operator configured no index for a kind asked for,
        before anything is made."""
        for kind, asked in (("python", plan.python_packages), ("npm", plan.npm_packages),
                            ("system", plan.system_packages)):
            configured = bool(self.indexes and {"python": self.indexes.python, "npm": self.indexes.npm,
                                                "system": self.indexes.debian}[kind])
            if asked and not configured:
                raise invalid_request(
                    f"Installing {kind} packages ('environment.packages.{kind}') needs a package index the operator "
                    f"allows, and this server has none for {kind} ({SETTING}).",
                    param=f"environment.packages.{kind}", code="unsupported_value")
            missing = self._missing_tool(kind) if asked else None
            if missing is not None:
                raise invalid_request(f"Installing {kind} packages ('environment.packages.{kind}') needs {missing} in "
                                      "the sandbox, which this server does not have.",
                                      param=f"environment.packages.{kind}", code="unsupported_value")
            if asked:
                why = self.sandbox.refusal("shell", network=True)
                if why is not None:
                    raise invalid_request(f"Installing packages ('environment.packages.{kind}') cannot run on this "
                                          f"server: {why}.", param=f"environment.packages.{kind}",
                                          code="unsupported_value")

    def _missing_tool(self, kind: str) -> str | None:
        """The installer a kind needs, where the sandbox is bubblewrap on this host (its ``/usr`` is the host's:
        sandbox/command.py) and lacks it; a pod's image is not known here (a missing installer fails the install)."""
        if not isinstance(self.sandbox, Sandbox):
            return None
        tools = {"npm": ("npm",), "python": ("python3",), "system": ("apt-get", "dpkg-deb")}[kind]
        return next((tool for tool in tools if not shutil.which(tool, path=SANDBOX_PATH)), None)

    def policy(self) -> NetworkPolicy:
        """The install's own network: the index hosts and nothing else."""
        assert self.indexes is not None
        policy = parse_policy({"type": "allowlist", "allowed_domains": self.indexes.hosts()}, SETTING)
        assert policy is not None
        return policy

    async def install(self, container_id: str, python: tuple[str, ...], npm: tuple[str, ...], *,
                      tenant: str, system: tuple[str, ...] = ()) -> None:
        """Run the install in the container and keep its tree; raises :class:`InstallFailed` saying why."""
        assert self.indexes is not None
        container = await self.containers.live(container_id, tenant=tenant)
        if container is None:
            raise InstallFailed("the environment's container is gone")
        job = ShellJob([install_command(python, npm, self.indexes, system)], max_output_length=MAX_OUTPUT)
        started = time.monotonic()
        try:
            async with self.containers.lock(container.id), self.sandbox.call(
                    tenant=tenant, job="shell", network=self.policy(), memory_limit=container.memory_limit) as call:
                outputs, result = await run_shell(call, job)
                ran = outputs[0] if outputs else None
                if ran is None or ran.exit_code != 0:
                    said = (ran.stderr.strip() or ran.stdout.strip()) if ran is not None else ""
                    why = said or result.note or f"the install ended ({result.outcome})"
                    raise InstallFailed(_naming(why[-MAX_OUTPUT:], python + npm + system))
                blob_id, size, files = await self._keep(call.thread, call.data / ".packages",
                                                             call.data / ".packages-modes")
        except SandboxBusy:
            raise InstallFailed("no sandbox was free for the install in time") from None
        except SandboxUnavailable as refused:
            raise InstallFailed(f"the sandbox is unavailable ({refused})") from None
        try:
            kept = await self.containers.store.set_container_packages(
                container.id, blob_id, self.containers.now(), tenant=tenant, size=size,
                max_stored_bytes=self.containers.files.quota.limit(tenant))
        except StorageLimitExceeded as refused:  # the tree counts in the tenant's stored bytes, as files do
            await self.containers.blobs.remove(blob_id)
            raise InstallFailed(f"the installed packages ({size} bytes) would pass this project's storage limit of "
                                f"{refused.limit} bytes ({refused.used} bytes in use)") from None
        if not kept:
            await self.containers.blobs.remove(blob_id)
            raise InstallFailed("the environment's container is gone")
        log.info("environment_packages_installed", container_id=container.id, python=len(python), npm=len(npm),
                 system=len(system), files=files, bytes=size, seconds=round(time.monotonic() - started, 3))

    async def _keep(self, in_call: Callable[..., Awaitable[Any]], tree: Path, modes: Path) -> tuple[str, int, int]:
        """The installed tree zipped into a new blob: (its id, the tree's bytes, its files). ``in_call``: the
        call's own threads (the tree is under its /mnt/data: sandbox/data_threads.py)."""
        with tempfile.TemporaryDirectory(prefix="rb-packages-") as staging:
            archive = Path(staging) / "packages.zip"
            size, files = await in_call(lambda: zip_tree(tree, archive, self.containers.container_bytes,
                                                         read_modes(modes)))
            blob_id = new_file_id()
            writer = await self.containers.blobs.writer(blob_id)
            try:
                with archive.open("rb") as source:
                    while chunk := await asyncio.to_thread(source.read, CHUNK):
                        await writer.write(chunk)
                await writer.publish()
            except BaseException:
                await writer.discard()
                raise
        return blob_id, size, files

    @contextlib.asynccontextmanager
    async def laid_out(self, container: StoredContainer) -> AsyncIterator[list[tuple[Path, str]]]:
        """The container's packages for one admitted call: ``[(host directory, /mnt/packages)]`` to bind
        read-only, none without packages (or when their blob is gone: the container was deleted meanwhile)."""
        blob_id = container.packages_blob
        entry = await self._entry(blob_id) if blob_id else None
        if entry is None:
            yield []
            return
        entry.users += 1
        try:
            yield [(entry.path, PACKAGES_DIR)]
        finally:
            entry.users -= 1
            entry.used_at = time.monotonic()
            await self._evict()

    async def _entry(self, blob_id: str) -> TreeEntry | None:
        async with self._trees.lock(blob_id):
            entry = self._trees.entries.get(blob_id)
            if entry is None:
                root = await self._trees.root()
                try:
                    async with self.containers.blobs.local_copy(blob_id) as source:
                        entry = await asyncio.to_thread(unpack_tree, source, root / blob_id,
                                                        self.containers.container_bytes)
                except FileNotFoundError:
                    return None
                self._trees.entries[blob_id] = entry
            return entry

    async def _evict(self) -> None:
        await self._trees.evict()


def _naming(said: str, entries: tuple[str, ...]) -> str:
    """The install's error, naming the first package its output names."""
    lowered = said.lower()
    for entry in entries:
        at = entry.find("@", 1)  # an npm entry's version (a scope's '@' comes first)
        name = re.split(r"[\[;<>=!~ ]", entry if at < 0 else entry[:at], maxsplit=1)[0]  # Debian's: before '='
        if name and name.lower() in lowered:
            return f"Installing the package '{entry}' failed: {said}"
    return f"Installing the packages ({', '.join(entries)}) failed: {said}"

