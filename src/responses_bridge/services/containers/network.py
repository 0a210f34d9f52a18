"""A container's network policy kept with it: checked on the way in (``POST /v1/containers``, the code
interpreter's ``auto`` container), stored with each domain secret's value sealed with the deployment's key (the
``encrypted_content`` key, sealing.py), and opened again only for the sandbox call that runs under it.

So a container's row, a retrieve or list of it, a log line and a metric never hold a secret's value: the row holds
ciphertext, the wire shows ``{"type", "allowed_domains"}`` (container_shapes.network_policy_object), and the
sandbox sees only placeholders (sandbox/egress/proxy.py). Every replica sharing the sealing key opens the same policy.
"""

from __future__ import annotations

from typing import Any

import orjson

from ...protocol.errors import invalid_request
from ...sandbox.egress.policy import NetworkPolicy, from_stored, parse_policy, stored_form
from ...sealing import Sealer
from ...store.records import StoredContainer

PURPOSE = "container_domain_secret"


class NetworkPolicies:
    """``sealer``: the deployment's; ``enabled``: whether ``allowlist`` policies are allowed at all
    (``RESPONSES_BRIDGE_CODE_EGRESS_ALLOWLIST``); ``unrestricted``: whether an agent environment's block list (or
    ``access: enabled``) is (``RESPONSES_BRIDGE_CODE_EGRESS_UNRESTRICTED``, and only with allowlists)."""

    def __init__(self, sealer: Sealer | None = None, *, enabled: bool = False, unrestricted: bool = False) -> None:
        self.sealer = sealer
        self.enabled = enabled and sealer is not None
        self.unrestricted = unrestricted and self.enabled

    def parse(self, value: object, param: str) -> NetworkPolicy | None:
        """The wire's ``network_policy`` checked (400s naming the field); an ``allowlist`` where the deployment
        allows none is a 400 too."""
        policy = parse_policy(value, param)
        self.check_allowed(policy, param)
        return policy

    def check_allowed(self, policy: NetworkPolicy | None, param: str) -> None:
        """A 400 naming ``param`` for an ``allowlist`` where the deployment allows none."""
        if policy is not None and not self.enabled:
            raise invalid_request(f"Invalid value for '{param}': this server allows no network access from "
                                  "containers (RESPONSES_BRIDGE_CODE_EGRESS_ALLOWLIST=false); use "
                                  "{\"type\": \"disabled\"}.", param=param, code="network_policy_not_allowed")
        if policy is not None and policy.blocked and not self.unrestricted:
            raise invalid_request(f"Invalid value for '{param}': this server allows containers only the domains "
                                  "they list (RESPONSES_BRIDGE_CODE_EGRESS_UNRESTRICTED=false); use 'access': "
                                  "'restricted' with 'allowed_domains'.", param=param,
                                  code="network_policy_not_allowed")

    def stored(self, policy: NetworkPolicy | None) -> str | None:
        if policy is None:
            return None
        sealer = self.sealer
        assert sealer is not None, "parse() refuses a policy without a sealer"
        return orjson.dumps(stored_form(policy, lambda value: sealer.seal(PURPOSE, value))).decode()

    def opened(self, container: StoredContainer) -> NetworkPolicy | None:
        """The policy a call in ``container`` runs under, secrets opened; None: no network."""
        if not container.network_policy:
            return None
        sealer = self.sealer
        if sealer is None:
            raise ValueError("the container has a network policy and this server has no sealing key to open it")
        value: dict[str, Any] = orjson.loads(container.network_policy)
        return from_stored(value, lambda sealed: str(sealer.open(PURPOSE, sealed)))
