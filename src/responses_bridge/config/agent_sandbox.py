"""Where the code interpreter's and the hosted shell's calls run (sandbox/backends.py), and the settings of the
``agent-sandbox`` backend: pods claimed from kubernetes-sigs/agent-sandbox warm pools (sandbox/agent_sandbox/). A
group of settings.py's :class:`Settings`, in a module of its own beside sandbox.py.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings

SandboxBackendName = Literal["bubblewrap", "agent-sandbox"]


class AgentSandboxSettings(BaseSettings):
    """The sandbox backend and, for ``agent-sandbox``, the cluster's side of it."""

    code_sandbox_backend: SandboxBackendName = Field(default="bubblewrap", description=(
        "where code interpreter and hosted shell calls run: `bubblewrap` (namespaces on this host or in the "
        "bridge's container) or `agent-sandbox` (a pod claimed per call from a kubernetes-sigs/agent-sandbox "
        "SandboxWarmPool; pip extra `agent-sandbox`)"))
    agent_sandbox_namespace: str = Field(default="default", description=(
        "namespace of the SandboxWarmPools the bridge claims sandboxes from (and of its claims)"))
    agent_sandbox_pools: str = Field(default="1g=responses-bridge-1g", description=(
        "the SandboxWarmPool serving each container memory_limit tier, comma-separated `<tier>=<pool>` (a "
        "container whose tier has no pool is refused with a 400; a container without memory_limit takes 1g)"))
    agent_sandbox_ready_timeout: float = Field(default=30.0, gt=0, description=(
        "seconds a claim may take to become Ready (a warm pool answers in well under one); past it the call fails "
        "with a clear error and the claim is deleted"))
    agent_sandbox_shutdown_margin: int = Field(default=60, ge=1, description=(
        "seconds past a call's time limit and ready deadline at which agent-sandbox's controller deletes its claim "
        "anyway (the claim's shutdownTime): what a bridge that crashed mid-call leaves lives no longer"))
    agent_sandbox_api_url: str | None = Field(default=None, description=(
        "the Kubernetes API server's URL; unset: the in-cluster service account, else the kubeconfig"))
    agent_sandbox_rest_port: int = Field(default=8080, ge=1, le=65535, description=(
        "the sandbox runtime's file (REST) port on the pod"))
    agent_sandbox_grpc_port: int = Field(default=9090, ge=1, le=65535, description=(
        "the sandbox runtime's process (gRPC ProcessService) port on the pod"))
    agent_sandbox_egress_listen: str | None = Field(default=None, description=(
        "`host:port` where the bridge listens for its sandbox pods' egress (each call under an allowlist network "
        "policy gets a credential of its own for it; the pods' NetworkPolicy lets them reach only this port); "
        "unset: pods have no way out, and an allowlist policy is a 400"))
    agent_sandbox_egress_url: str | None = Field(default=None, description=(
        "the egress proxy's URL as the pods reach it (e.g. `http://responses-bridge-egress.NAMESPACE.svc:3128`); "
        "unset: `http://` and the listen address"))
    agent_sandbox_egress_head_seconds: float = Field(default=2.0, gt=0, le=60, description=(
        "seconds a connection to the egress door has to send its request head (with its credential) before the "
        "door closes it"))
    agent_sandbox_egress_pending_per_source: int = Field(default=16, ge=1, description=(
        "connections one source address may hold open at the egress door before showing a credential; past it, "
        "its new ones are closed at once"))
    agent_sandbox_egress_pending_connections: int = Field(default=64, ge=1, description=(
        "connections all sources together may hold open at the egress door before showing a credential; past it, "
        "a source holding fewer than the busiest one takes the place of that one's oldest, else its connection is "
        "closed at once"))
    agent_sandbox_egress_max_connections: int = Field(default=0, ge=0, description=(
        "connections the egress door holds at once, pending or relaying (past it, new ones are closed at once); "
        "0: an eighth of the process's descriptor limit, at least 16, at most 1,024 — each relayed connection "
        "takes four descriptors with the call's proxy, so the door never takes more than half of them"))
    agent_sandbox_runtime_root: str = Field(default="/mnt", pattern=r"^/", description=(
        "the sandbox runtime's root directory in the pod (sandboxd's --root-dir; the sandbox image's is /mnt): its "
        "file API's paths are relative to it, and /mnt/data and /mnt/skills must lie under it"))
    agent_sandbox_python: str = Field(default="python3", description=(
        "the interpreter the sandbox image runs the model's code with"))
    agent_sandbox_desktop_pool: str | None = Field(default=None, description=(
        "the SandboxWarmPool of desktop pods (deploy/desktop-image: Xvfb, Chromium, xdotool and Pillow over the "
        "sandbox image), one claimed per session desktop (`environment.desktop.enabled`) for as long as it runs; "
        "unset: no desktop runs on this backend (a 400 naming this setting)"))

    @field_validator("agent_sandbox_egress_listen")
    @classmethod
    def _check_listen(cls, value: str | None) -> str | None:
        if value is not None:
            host, colon, port = value.rpartition(":")
            if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{value!r} is not host:port")
        return value

    @field_validator("agent_sandbox_desktop_pool")
    @classmethod
    def _check_desktop_pool(cls, value: str | None) -> str | None:
        from ..sandbox.limits import parse_pool_name  # light: not the backend's modules, nor the runner

        return parse_pool_name(value.strip()) if value and value.strip() else None

    @field_validator("agent_sandbox_pools")
    @classmethod
    def _check_pools(cls, value: str) -> str:
        from ..sandbox.limits import parse_pools  # light: the sandbox's modules load only where code may run

        parse_pools(value)
        return value
