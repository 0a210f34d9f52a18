"""The code interpreter's and the hosted shell's settings (sandbox/, run/tools/code_interpreter.py,
run/tools/shell.py): each call's limits in its bubblewrap sandbox, the uid it runs as, where skills are laid out,
and the egress proxy's limits. A group of settings.py's :class:`Settings` (which sets the sources and the
``RESPONSES_BRIDGE_`` prefix), in a module of its own so settings.py stays within the house's module size; its
fields follow the endpoints' in configuration.md.
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings


class CodeSandboxSettings(BaseSettings):
    """Limits and placement of the code sandbox and its egress proxy."""

    code_timeout: float = Field(default=30.0, gt=0, description=(
        "wall seconds one code interpreter call (or one hosted shell call, all its commands) may run"))
    code_memory_bytes: int = Field(default=1 << 30, ge=64 << 20, description=(
        "memory of one code interpreter or hosted shell call, all its processes and in-memory files together (a "
        "cgroup per call "
        "where one can be made; else one process whose RLIMIT_AS is this less /tmp and /dev/shm)"))
    code_cgroup: bool = Field(default=True, description=(
        "run each code interpreter call in a memory cgroup of its own where this process may make one (cgroup v2 "
        "delegated, or v1 writable); false: always the single-process mode (the code may start no subprocess, and "
        "the hosted shell, whose commands need processes, is refused)"))
    code_require_cgroup: bool = Field(default=False, description=(
        "refuse the code interpreter where no memory cgroup per call can be made, instead of running calls in the "
        "single-process mode"))
    code_max_processes: int = Field(default=64, ge=4, description="processes and threads one call may have at once")
    code_max_file_bytes: int = Field(default=100 << 20, ge=1, description="largest file in a container, bytes")
    code_max_container_bytes: int = Field(default=1 << 30, ge=1, description="bytes of all of one container's files")
    code_max_output_bytes: int = Field(default=64 * 1024, ge=1024, description=(
        "of a call's stdout and of its stderr, bytes kept (the rest is counted and cut, with a note)"))
    code_concurrency: int = Field(default=0, ge=0, description=(
        "sandboxes running at once (others wait within their timeout); 0: one per core. With several workers, "
        "each runs its share (at least one)"))
    code_workdir: str | None = Field(default=None, description=(
        "where the bridge's private scratch directory is made on the host (`responses-bridge-<uid>`): the egress "
        "proxy's sockets and the skills cache (each skill version unpacked once, bound read-only at "
        "/mnt/skills/<name> of the calls that use it); swept at start of what a crashed bridge left; unset: the "
        "system's temporary directory"))
    code_skills_cache_bytes: int = Field(default=1 << 30, ge=0, description=(
        "unpacked skills kept on the host's disk for the calls that use them, bytes (each skill version unpacked "
        "once, shared by every call; past this the least recently used that no call holds are removed)"))
    code_sandbox_uid: int = Field(default=65534, ge=1, le=(1 << 32) - 2, description=(
        "the host uid a bridge run as root starts each sandbox under (its code's uid on the host; never 0, never "
        "the bridge's root): it must be able to traverse the path to the Python runtime and the bridge's scratch "
        "directory; a bridge run as another uid keeps its own"))
    code_sandbox_gid: int | None = Field(default=None, ge=1, le=(1 << 32) - 2, description=(
        "the host gid of the sandbox of a bridge run as root; unset: the same number as code_sandbox_uid"))
    run_as: str | None = Field(default=None, pattern=r"^[0-9]+(:[0-9]+)?$", description=(
        "`uid[:gid]` a `serve` started as root hands its own cgroup to (as systemd's Delegate= does: the directory "
        "and its cgroup.procs, cgroup.threads and cgroup.subtree_control) and then drops to before serving, so a "
        "writable cgroup the runtime grants gives each code interpreter and shell call a cgroup of its own while "
        "the bridge never serves as root; never 0; ignored when not started as root"))
    code_egress_allowlist: bool = Field(default=True, description=(
        "allow `allowlist` network policies on containers: the code reaches the listed domains through the "
        "bridge's egress proxy and nothing else; false: an `allowlist` policy is a 400, sandboxes have no network"))
    code_egress_unrestricted: bool = Field(default=False, description=(
        "allow an agent session's `openai_hosted` environment a network that is not an allowlist: `access: "
        "enabled` (every host) or `restricted` with `blocked_domains` (every host but those), still through the "
        "egress proxy and its address rules (public addresses, and code_egress_allowed_targets); false: those are "
        "a 400 naming this setting; needs code_egress_allowlist"))
    code_egress_allowed_targets: str = Field(default="", description=(
        "addresses beyond public ones the egress proxy may reach, comma-separated: a CIDR opens all its ports, "
        "`address:port` one (a loopback address only so, keeping the bridge's own ports closed); unset: public only"))
    package_indexes: str = Field(default="", description=(
        "the package indexes an agent session's `openai_hosted` environment installs its `packages` from at its "
        "start, comma-separated `python=URL` (a PEP 503 simple index; the first is pip's index, the others extra "
        "ones), `npm=URL` (the registry, at most one) and `debian=[options] URL suite component...` (a Debian "
        "repository for `system` packages, as a sources.list line without `deb`; signed by the Debian archive "
        "keyring unless `[trusted=yes]` or `[signed-by=/path]`): reached through the egress proxy for the install "
        "alone (its address rules apply: public addresses, and code_egress_allowed_targets); unset: `packages` is a "
        "400 naming this setting; needs code_egress_allowlist"))
    code_egress_max_bytes: int = Field(default=64 << 20, ge=1, description="egress bytes of one call, both ways")
    code_egress_connection_bytes: int = Field(default=32 << 20, ge=1, description="bytes of one egress connection")
    code_egress_max_connections: int = Field(default=64, ge=1, description="egress connections of one call")
    code_egress_connection_timeout: float = Field(default=30.0, gt=0, description="seconds one egress connection lives")
    code_egress_bridge_connections: int = Field(default=0, ge=0, description=(
        "egress connections of every call together that the process serves at once (past it a new one is refused "
        "as it is accepted); 0: a quarter of the process's descriptor limit, at most 1,024"))
    code_egress_tenant_connections: int = Field(default=0, ge=0, description=(
        "of those, the egress connections one tenant's calls together may hold at once when it is alone (beside "
        "other tenants less, by the fair-share rule of docs/operations.md; past it a new one is "
        "refused, naming this share), so that another tenant's call always gets its connections; 0: half of "
        "code_egress_bridge_connections where tenants are told apart (auth keys or header), all of them with "
        "auth none"))

    @field_validator("run_as")
    @classmethod
    def _check_run_as(cls, value: str | None) -> str | None:
        if value is not None:
            from ..sandbox.cgroups.delegation import parse_user
            parse_user(value)
        return value

    @field_validator("package_indexes")
    @classmethod
    def _check_package_indexes(cls, value: str) -> str:
        if value.strip():  # a ValueError names the entry
            from ..protocol.containers.environment_packages import PackageIndexes
            PackageIndexes.parse(value)
        return value

    @field_validator("code_egress_allowed_targets")
    @classmethod
    def _check_egress_targets(cls, value: str) -> str:
        if value.strip():  # a ValueError names the entry; the proxy's modules load only when there is one
            from ..sandbox.egress.policy import EgressRules
            EgressRules.parse(value)
        return value
