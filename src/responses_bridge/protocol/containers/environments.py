"""A session's ``openai_hosted`` environment checked: what the bridge can give it (a container on the configured
sandbox backend, its size a memory tier, network by the egress proxy's policy: an allowlist, or a block list where
the deployment allows it), and a desktop with its browser (``desktop.enabled``: started on the session's first
computer call, services/agents/computer/desktops.py; whether this machine can run one is the service's to say). Its
``capability_directories`` are paths in its workspace (capability_directories.py), whose
skills and ``AGENTS.md`` each turn offers the agent (services/agents/environments/capability_directories.py). Its
``python``, ``npm`` and ``system`` packages are installed at its start from the operator's indexes
(environment_packages.py checks them). With ``environment_id`` the session takes an existing
standalone environment, asking nothing else. Its ``files``, ``setup_commands`` and ``env`` are checked in
environment_fields.py and given to the container by services/agents/environments/setup.py; a template
(``environment_template_id``) is resolved into the environment before it is checked here
(services/agents/environments/templates.py). Its ``skills`` are the container's (services/containers/container_skills.py
checks and reads them), laid out read-only at ``/mnt/skills/<name>/``.

The environment's shape as the session shows it is the SDK's ``EnvironmentResourceOpenAIHosted``; its ``id`` is the
container's (``cntr_…``), which is also each artifact's ``environment_id``.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any

from ... import ids
from ..errors import APIError, invalid_request
from .capability_directories import check_directories
from .environment_fields import check_env, check_files, check_setup_commands
from .environment_packages import checked_packages
from .environment_plugins import checked_plugins, shown_plugins

HOSTED_FIELDS = ("type", "capability_directories", "container_size", "desktop", "env", "environment_id",
                 "environment_template_id", "files", "network", "packages", "plugins", "setup_commands", "skills")
MEMORY_TIERS = {"small": "1g", "medium": "4g", "large": "16g"}  # container_size -> the container's memory_limit


def _refused(what: str, param: str) -> APIError:
    return invalid_request(f"{what} is not served by this bridge in an 'openai_hosted' environment (its container "
                           "runs the hosted shell on the bridge's sandbox).", param=param, code="unsupported_value")


@dataclass(frozen=True)
class HostedPlan:
    """What a session's container is made with."""

    container_size: str
    memory_limit: str
    access: str  # "disabled", "restricted" or "enabled"
    allowed_domains: tuple[str, ...]
    skills: list[Any] | None = None  # as given: the container's skills (checked when they are resolved)
    blocked_domains: tuple[str, ...] = ()  # as given (sandbox/egress/scope.block_list checks them)
    # placed, run and given to commands by services/agents/environments/setup.py (environment_fields.py checks)
    files: list[dict[str, Any]] = field(default_factory=list)
    setup_commands: list[dict[str, str]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    environment_id: str | None = None  # an existing environment the session takes (services/agents/environments)
    python_packages: tuple[str, ...] = ()  # installed at the start (environment_packages.py checks them)
    npm_packages: tuple[str, ...] = ()
    system_packages: tuple[str, ...] = ()  # Debian packages, unpacked (services/agents/environments/packages.py)
    capability_directories: tuple[str, ...] = ()  # absolute paths under /workspace (capability_directories.py)
    plugins: list[dict[str, Any]] = field(default_factory=list)  # their skills offered (services/agents/environments)
    desktop: bool = False  # ``desktop.enabled``: what ``computer_use`` drives (services/agents/computer/desktops.py)

    @property
    def block_list(self) -> bool:
        """Every host but ``blocked_domains`` (``enabled``, or ``restricted`` with ``blocked_domains``)."""
        return self.access == "enabled" or (self.access == "restricted" and not self.allowed_domains)

    def network_policy(self) -> dict[str, Any] | None:
        """As the Containers API's ``network_policy`` (services/containers/network.py checks it): an allowlist,
        None without network; a block list has none (services/agents/environments/environments.py makes it)."""
        if self.access == "disabled" or self.block_list:
            return None
        return {"type": "allowlist", "allowed_domains": list(self.allowed_domains)}

    def resource(self, environment_id: str, skills: list[dict[str, Any]],
                 files: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The session's ``environment`` (the SDK's ``EnvironmentResourceOpenAIHosted``)."""
        return {"id": environment_id, "type": "openai_hosted",
                "capability_directories": list(self.capability_directories), "files": files or [],
                "network": {"access": self.access, "allowed_domains": list(self.allowed_domains)},
                "packages": {"npm": list(self.npm_packages), "python": list(self.python_packages),
                             "system": list(self.system_packages)},
                "plugins": shown_plugins(self.plugins), "skills": skills,
                "container_size": self.container_size, "desktop": {"enabled": self.desktop}}


def self_hosted(environment: dict[str, Any], session_id: str) -> dict[str, Any]:
    """A ``self_hosted`` environment (the SDK's ``EnvironmentResourceSelfHosted``): the client runs the model's
    commands, handed to it as the session's required actions; ``remote_url`` is where it takes them and gives their
    results: the session's event stream (or a ``codex exec-server`` attached to it runs them:
    adapters/http/agents/executor_routes.py). Its ``capability_directories`` are on the client's machine: absolute, or
    relative to ``workspace_directory``."""
    for key in environment:
        if key not in ("type", "workspace_directory", "capability_directories"):
            raise invalid_request(f"Unknown parameter: 'environment.{key}'.", param=f"environment.{key}",
                                  code="unknown_parameter")
    directory = environment.get("workspace_directory")
    if not isinstance(directory, str) or not directory.startswith("/") or len(directory) > 4096:
        raise invalid_request("Invalid value for 'environment.workspace_directory': expected an absolute path.",
                              param="environment.workspace_directory", code="invalid_value")
    directories = check_directories(environment.get("capability_directories"),
                                    "environment.capability_directories", base=posixpath.normpath(directory))
    return {"id": ids.new_id("env"), "type": "self_hosted", "capability_directories": list(directories),
            "workspace_directory": directory, "remote_url": f"/v1/agents/sessions/{session_id}/events"}


def _empty(value: Any) -> bool:
    return value is None or value == [] or value == {}


def hosted_plan(environment: dict[str, Any]) -> HostedPlan:
    for key in environment:
        if key not in HOSTED_FIELDS:
            raise invalid_request(f"Unknown parameter: 'environment.{key}'.", param=f"environment.{key}",
                                  code="unknown_parameter")
    desktop = environment.get("desktop")
    if desktop is not None and (not isinstance(desktop, dict) or not isinstance(desktop.get("enabled"), bool)):
        raise invalid_request("Invalid value for 'environment.desktop': expected {\"enabled\": boolean}.",
                              param="environment.desktop", code="invalid_value")
    if environment.get("environment_template_id") is not None:  # resolved before (services/agents/environments)
        raise _refused("An environment template ('environment_template_id')", "environment.environment_template_id")
    if environment.get("environment_id") is not None:
        return _existing(environment)
    directories = check_directories(environment.get("capability_directories"),
                                    "environment.capability_directories")
    python, npm, system = checked_packages(environment.get("packages"))
    size = environment.get("container_size", "medium")
    if size not in MEMORY_TIERS:
        raise invalid_request("Invalid value for 'environment.container_size': expected 'small', 'medium' or "
                              "'large'.", param="environment.container_size", code="invalid_value")
    access, allowed, blocked = network_of(environment.get("network"))
    skills = environment.get("skills")
    return HostedPlan(size, MEMORY_TIERS[size], access, allowed, skills if skills else None, blocked,
                      files=check_files(environment.get("files"), "environment.files"),
                      setup_commands=check_setup_commands(environment.get("setup_commands"),
                                                          "environment.setup_commands"),
                      env=check_env(environment.get("env"), "environment.env"), python_packages=python,
                      npm_packages=npm, system_packages=system, capability_directories=directories,
                      plugins=checked_plugins(environment.get("plugins"), "environment.plugins"),
                      desktop=bool((desktop or {}).get("enabled")))


def _existing(environment: dict[str, Any]) -> HostedPlan:
    """A session taking an existing standalone environment (``environment_id``): nothing else may be asked."""
    environment_id = environment["environment_id"]
    if not isinstance(environment_id, str) or len(environment_id) > 200:
        raise invalid_request("Invalid value for 'environment.environment_id': expected an environment ID.",
                              param="environment.environment_id", code="invalid_value")
    for key, value in environment.items():
        if key not in ("type", "environment_id") and value is not None:
            raise invalid_request(f"'environment.{key}' cannot be combined with 'environment.environment_id' (an "
                                  "existing environment keeps its own configuration).", param=f"environment.{key}",
                                  code="invalid_value")
    return HostedPlan("medium", MEMORY_TIERS["medium"], "disabled", (), environment_id=environment_id)


def network_of(network: Any) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """``(access, allowed domains, blocked domains)``; without ``network``, no network (as a container's
    default). ``enabled`` and ``blocked_domains`` are allowed where the deployment allows them
    (services/containers/network.py)."""
    if network is None:
        return "disabled", (), ()
    if not isinstance(network, dict):
        raise invalid_request("Invalid type for 'environment.network': expected an object.",
                              param="environment.network", code="invalid_type")
    for key in network:
        if key not in ("access", "allowed_domains", "blocked_domains"):
            raise invalid_request(f"Unknown parameter: 'environment.network.{key}'.",
                                  param=f"environment.network.{key}", code="unknown_parameter")
    access = network.get("access")
    if access not in ("enabled", "disabled", "restricted"):
        raise invalid_request("Invalid value for 'environment.network.access': expected 'enabled', 'disabled' or "
                              "'restricted'.", param="environment.network.access", code="invalid_value")
    allowed, blocked = network.get("allowed_domains"), network.get("blocked_domains")
    for key, value in (("allowed_domains", allowed), ("blocked_domains", blocked)):
        if access != "restricted" and not _empty(value):
            raise invalid_request(f"'environment.network.{key}' requires 'access': 'restricted'.",
                                  param=f"environment.network.{key}", code="invalid_value")
        if value is not None and (not isinstance(value, list) or not all(isinstance(x, str) for x in value)):
            raise invalid_request(f"Invalid type for 'environment.network.{key}': expected an array of domains.",
                                  param=f"environment.network.{key}", code="invalid_type")
    if access != "restricted":
        return access, (), ()
    if not _empty(allowed) and not _empty(blocked):
        raise invalid_request("'environment.network.blocked_domains' cannot be combined with a non-empty "
                              "'allowed_domains'.", param="environment.network.blocked_domains",
                              code="invalid_value")
    if _empty(allowed) and _empty(blocked):
        raise invalid_request("'environment.network.access': 'restricted' needs 'allowed_domains' or "
                              "'blocked_domains', a non-empty array of domains.",
                              param="environment.network.allowed_domains", code="invalid_value")
    return "restricted", tuple(allowed or ()), tuple(blocked or ())
