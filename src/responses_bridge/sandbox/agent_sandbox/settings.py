"""What the sandbox backends read of the bridge's settings, as protocols: the settings (config/settings.py,
config/agent_sandbox.py, config/sandbox.py) satisfy them, and the sandbox never imports the settings, which stand
above it. ``parse_pools`` is here, below both, for the settings' check and the backend alike."""

from __future__ import annotations

from typing import Protocol

from ..limits import MEMORY_LIMITS


def parse_pool_name(name: str) -> str:
    """``name`` if it is a Kubernetes object name (lower-case, digits, ``-`` and ``.``, at most 253); raises
    ValueError saying what it is not."""
    if not name or len(name) > 253 or not all((c.isalnum() and c.islower()) or c.isdigit() or c in "-." for c in name):
        raise ValueError(f"{name!r} is not a SandboxWarmPool name (a lower-case Kubernetes name)")
    return name


def parse_pools(value: str) -> dict[str, str]:
    """``1g=pool-a,4g=pool-b`` as {tier: SandboxWarmPool name}. Raises ValueError naming the entry that is not
    ``<tier>=<name>`` with a tier of OpenAI's (1g, 4g, 16g, 64g) and a Kubernetes name."""
    pools: dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in value.split(","))):
        tier, equals, name = entry.partition("=")
        tier, name = tier.strip().lower(), name.strip()
        if not equals or tier not in MEMORY_LIMITS or not _is_name(name):
            raise ValueError(f"{entry!r} is not <tier>=<SandboxWarmPool name> with a tier among "
                             f"{', '.join(MEMORY_LIMITS)} and a lower-case Kubernetes name")
        pools[tier] = name
    return pools


def _is_name(name: str) -> bool:
    try:
        parse_pool_name(name)
    except ValueError:
        return False
    return True


class AgentSandboxConfig(Protocol):
    """The cluster's side of the ``agent-sandbox`` backend (RESPONSES_BRIDGE_AGENT_SANDBOX_*)."""

    @property
    def agent_sandbox_namespace(self) -> str: ...
    @property
    def agent_sandbox_pools(self) -> str: ...
    @property
    def agent_sandbox_ready_timeout(self) -> float: ...
    @property
    def agent_sandbox_shutdown_margin(self) -> int: ...
    @property
    def agent_sandbox_api_url(self) -> str | None: ...
    @property
    def agent_sandbox_rest_port(self) -> int: ...
    @property
    def agent_sandbox_grpc_port(self) -> int: ...
    @property
    def agent_sandbox_egress_listen(self) -> str | None: ...
    @property
    def agent_sandbox_egress_url(self) -> str | None: ...
    @property
    def agent_sandbox_egress_head_seconds(self) -> float: ...
    @property
    def agent_sandbox_egress_pending_per_source(self) -> int: ...
    @property
    def agent_sandbox_egress_pending_connections(self) -> int: ...
    @property
    def agent_sandbox_egress_max_connections(self) -> int: ...
    @property
    def agent_sandbox_runtime_root(self) -> str: ...
    @property
    def agent_sandbox_python(self) -> str: ...
    @property
    def agent_sandbox_desktop_pool(self) -> str | None: ...


class BackendConfig(AgentSandboxConfig, Protocol):
    """What choosing and opening a backend reads (sandbox/backends.py): which one, and bubblewrap's own."""

    @property
    def code_sandbox_backend(self) -> str: ...
    @property
    def code_cgroup(self) -> bool: ...
    @property
    def code_require_cgroup(self) -> bool: ...
    @property
    def code_sandbox_uid(self) -> int: ...
    @property
    def code_sandbox_gid(self) -> int | None: ...
