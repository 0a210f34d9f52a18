"""Vaults and credentials of the Agents API (``client.beta.agents.vaults``), a tenant's own, and the look-ups a
session makes in them.

Both are records of the agents' store (kinds ``vault`` and ``vault_credential``, a credential's parent its vault,
so a deleted vault takes its credentials with it). A credential's record is the SDK's ``Credential`` plus one field
of the bridge's own, ``_sealed``: its write-only values sealed with the deployment's key (sealing.py, purpose
:data:`PURPOSE`). A row read back, a route's answer, a log line never hold a secret in plaintext; it is opened only
where it is used — the ``Authorization`` of a session's MCP call (:meth:`VaultService.mcp_token`, put in each
turn's request by :func:`credentialed`) and, for an
OpenAI-hosted environment, the egress proxy's domain secrets (:meth:`VaultService.domain_secrets`).

The bridge always holds a sealing key (``RESPONSES_BRIDGE_SEALING_KEY``, or one shared in the database, or the key
file beside SQLite): replicas on one database share it, so every replica opens what another sealed.

There is no archive route in the API: every vault and credential is ``active``; a list filtered on ``archived``
alone is empty.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from datetime import UTC, datetime
from typing import Any

from .... import ids
from ....net.host_policy import HostPolicy
from ....protocol.agents.inputs import known
from ....protocol.agents.vaults import (
    CREDENTIAL_FIELDS,
    CREDENTIAL_UPDATE_FIELDS,
    VAULT_FIELDS,
    credential_not_found,
    metadata_of,
    name_of,
    parse_auth,
    rotate_auth,
    same_server,
    vault_not_found,
)
from ....protocol.errors import APIError, invalid_request
from ....protocol.lists import list_of
from ....sandbox.egress.policy import DomainSecret, blocked_by, match_entry
from ....sealing import Sealer
from ....store.base_agents import AgentStore
from ...pagination import page_errors
from .oauth import GuardedTokenEndpoint, TokenEndpoint, refresh_due, refresh_token

PURPOSE = "vault_credential"
MAX_VAULTS_PER_TENANT = 1_000
MAX_CREDENTIALS_PER_VAULT = 100
MAX_SESSION_VAULTS = 16
_SEALED = "_sealed"


def public_credential(record: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key != _SEALED}


class VaultService:
    def __init__(self, store: AgentStore, sealer: Sealer, token_endpoint: TokenEndpoint | None = None) -> None:
        """``token_endpoint``: where OAuth refreshes go (oauth.py); by default reached under the
        MCP clients' host policy with nothing listed (public addresses only)."""
        self.store = store
        self.sealer = sealer
        self.token_endpoint = token_endpoint or GuardedTokenEndpoint(HostPolicy())
        self._refreshing: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    # --- vaults ---------------------------------------------------------------------------------------------

    async def create(self, body: dict[str, Any], *, tenant: str) -> dict[str, Any]:
        known(body, VAULT_FIELDS, "")
        vault: dict[str, Any] = {"id": ids.new_id("vault"), "object": "vault", "created_at": int(time.time()),
                 "metadata": metadata_of(body.get("metadata")),
                 "name": name_of(body["name"], "name") if body.get("name") is not None else None}
        if await self.store.count("vault", tenant=tenant) >= MAX_VAULTS_PER_TENANT:
            raise APIError(429, f"A project may keep at most {MAX_VAULTS_PER_TENANT} vaults; delete some first.",
                           type="invalid_request_error", code="vault_limit_reached")
        await self.store.put("vault", vault["id"], vault, tenant=tenant)
        return vault

    async def get(self, vault_id: str, *, tenant: str) -> dict[str, Any]:
        vault = await self.store.get("vault", vault_id, tenant=tenant)
        if vault is None:
            raise vault_not_found(vault_id)
        return vault

    async def update(self, vault_id: str, body: dict[str, Any], *, tenant: str) -> dict[str, Any]:
        known(body, VAULT_FIELDS, "")
        vault = await self.get(vault_id, tenant=tenant)
        if "metadata" in body:
            vault["metadata"] = metadata_of(body["metadata"])
        if "name" in body:
            vault["name"] = name_of(body["name"], "name") if body["name"] is not None else None
        await self.store.put("vault", vault_id, vault, tenant=tenant)
        return vault

    async def list_vaults(self, *, after: str | None, limit: int, order: str, metadata: list[tuple[str, str]],
                          statuses: tuple[str, ...], tenant: str) -> dict[str, Any]:
        with page_errors("vault"):
            page = await self.store.page("vault", tenant=tenant, after=after, limit=limit, order=order,
                                         metadata=metadata)
        if "active" not in statuses:
            return list_of([], has_more=False)
        return list_of(page.data, has_more=page.has_more)

    async def delete(self, vault_id: str, *, tenant: str) -> dict[str, Any]:
        """The vault and its credentials go; a session naming it fails its next MCP call's look-up (a 400 that
        names the credential), never uses a stale secret."""
        if not await self.store.delete("vault", vault_id, tenant=tenant):
            raise vault_not_found(vault_id)
        return {"id": vault_id, "object": "vault.deleted", "deleted": True}

    # --- credentials ----------------------------------------------------------------------------------------

    async def create_credential(self, vault_id: str, body: dict[str, Any], *, tenant: str) -> dict[str, Any]:
        known(body, CREDENTIAL_FIELDS, "")
        await self.get(vault_id, tenant=tenant)
        if body.get("name") is None:
            raise invalid_request("Missing required parameter: 'name'.", param="name",
                                  code="missing_required_parameter")
        name = name_of(body["name"], "name")
        public, secret = parse_auth(body.get("auth"))
        metadata = metadata_of(body.get("metadata"))
        page = await self.store.page("vault_credential", tenant=tenant, parent=vault_id,
                                     limit=MAX_CREDENTIALS_PER_VAULT)
        if page.has_more or len(page.data) >= MAX_CREDENTIALS_PER_VAULT:
            raise APIError(429, f"A vault may hold at most {MAX_CREDENTIALS_PER_VAULT} credentials.",
                           type="invalid_request_error", code="credential_limit_reached")
        now = int(time.time())
        record: dict[str, Any] = {
            "id": ids.new_id("cred"), "object": "vault.credential", "auth": public, "created_at": now,
            "metadata": metadata, "name": name, "updated_at": now, "vault_id": vault_id,
            _SEALED: self.sealer.seal(PURPOSE, secret)}
        await self.store.put("vault_credential", record["id"], record, tenant=tenant, parent=vault_id)
        return public_credential(record)

    async def _credential(self, vault_id: str, credential_id: str, tenant: str) -> dict[str, Any]:
        record = await self.store.get("vault_credential", credential_id, tenant=tenant)
        if record is None or record["vault_id"] != vault_id:
            await self.get(vault_id, tenant=tenant)  # a vault that is not there is named first
            raise credential_not_found(credential_id)
        return record

    async def get_credential(self, vault_id: str, credential_id: str, *, tenant: str) -> dict[str, Any]:
        return public_credential(await self._credential(vault_id, credential_id, tenant))

    async def update_credential(self, vault_id: str, credential_id: str, body: dict[str, Any], *,
                                tenant: str) -> dict[str, Any]:
        """``auth`` rotates the write-only values of the credential's own method; ``metadata`` replaces it."""
        known(body, CREDENTIAL_UPDATE_FIELDS, "")
        record = await self._credential(vault_id, credential_id, tenant)
        if body.get("auth") is not None:
            secret = self.sealer.open(PURPOSE, record[_SEALED])
            public, secret = rotate_auth(record["auth"], secret, body["auth"])
            record["auth"], record[_SEALED] = public, self.sealer.seal(PURPOSE, secret)
        if "metadata" in body:
            record["metadata"] = metadata_of(body["metadata"])
        record["updated_at"] = max(int(time.time()), record["updated_at"])
        await self.store.put("vault_credential", credential_id, record, tenant=tenant, parent=vault_id)
        return public_credential(record)

    async def list_credentials(self, vault_id: str, *, after: str | None, limit: int, order: str,
                               metadata: list[tuple[str, str]], statuses: tuple[str, ...],
                               tenant: str) -> dict[str, Any]:
        await self.get(vault_id, tenant=tenant)
        with page_errors("credential"):
            page = await self.store.page("vault_credential", tenant=tenant, parent=vault_id, after=after,
                                         limit=limit, order=order, metadata=metadata)
        if "active" not in statuses:
            return list_of([], has_more=False)
        return list_of([public_credential(record) for record in page.data], has_more=page.has_more)

    async def delete_credential(self, vault_id: str, credential_id: str, *, tenant: str) -> dict[str, Any]:
        await self._credential(vault_id, credential_id, tenant)
        await self.store.delete("vault_credential", credential_id, tenant=tenant)
        return {"id": credential_id, "object": "vault.credential.deleted", "deleted": True}

    # --- what sessions use ----------------------------------------------------------------------------------

    async def check_session_vaults(self, value: Any, *, tenant: str, param: str = "vault_ids") -> list[str]:
        """A session's ``vault_ids``: distinct ids of the tenant's own vaults (another tenant's is a 404)."""
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(entry, str) for entry in value):
            raise invalid_request(f"Invalid type for '{param}': expected an array of strings.", param=param,
                                  code="invalid_type")
        if len(value) > MAX_SESSION_VAULTS or len(set(value)) != len(value):
            raise invalid_request(f"Invalid '{param}': up to {MAX_SESSION_VAULTS} distinct vault ids.", param=param,
                                  code="invalid_value")
        for vault_id in value:
            await self.get(vault_id, tenant=tenant)
        return list(value)

    async def check_mcp_credential(self, vault_ids: list[str], credential_id: str, server_url: str, *, tenant: str,
                                   param: str) -> dict[str, Any]:
        """The record of ``credential_id`` if an MCP server at ``server_url`` may be reached with it: it must be in
        one of the session's vaults, be a ``static_bearer`` or ``mcp_oauth`` one, and authorize that very server (a
        token is never sent anywhere else). Every refusal is a 400 naming ``param``."""
        record = await self.store.get("vault_credential", credential_id, tenant=tenant)
        if record is None or record["vault_id"] not in vault_ids:
            raise invalid_request(f"Invalid '{param}': no credential '{credential_id}' in the session's vaults "
                                  "('vault_ids').", param=param, code="invalid_value")
        auth = record["auth"]
        if auth["type"] not in ("static_bearer", "mcp_oauth"):
            raise invalid_request(f"Invalid '{param}': credential '{credential_id}' is an '{auth['type']}' one, "
                                  "not for an MCP server.", param=param, code="invalid_value")
        if not same_server(auth["mcp_server_url"], server_url):
            raise invalid_request(f"Invalid '{param}': credential '{credential_id}' authorizes another MCP server "
                                  "than this tool's 'server_url'.", param=param, code="invalid_value")
        return record

    async def mcp_token(self, vault_ids: list[str], credential_id: str, server_url: str, *, tenant: str,
                        param: str) -> str:
        """The bearer token of ``credential_id`` for an MCP server at ``server_url``, opened for one request
        (:meth:`check_mcp_credential` says when it may not be used)."""
        record = await self.check_mcp_credential(vault_ids, credential_id, server_url, tenant=tenant, param=param)
        if refresh_due(record["auth"], datetime.now(UTC)):
            record = await self._refresh(record, tenant=tenant, param=param)
        return str(self.sealer.open(PURPOSE, record[_SEALED])["token"])

    async def _refresh(self, record: dict[str, Any], *, tenant: str, param: str) -> dict[str, Any]:
        """The credential with a fresh access token, stored. One refresh at a time per credential in a process;
        the record is read again under the lock, so a refresh another turn (or replica) made is used, not
        repeated with a refresh token the endpoint may already have rotated away."""
        lock = self._refreshing.setdefault(record["id"], asyncio.Lock())
        async with lock:
            current = await self.store.get("vault_credential", record["id"], tenant=tenant)
            if current is None:
                raise invalid_request(f"Invalid '{param}': the credential was deleted.", param=param,
                                      code="invalid_value")
            now = datetime.now(UTC)
            if not refresh_due(current["auth"], now):
                return current
            public, secret = await refresh_token(self.token_endpoint, current["auth"],
                                                 self.sealer.open(PURPOSE, current[_SEALED]), param=param, now=now)
            current["auth"], current[_SEALED] = public, self.sealer.seal(PURPOSE, secret)
            current["updated_at"] = max(int(time.time()), current["updated_at"])
            await self.store.put("vault_credential", current["id"], current, tenant=tenant,
                                 parent=current["vault_id"])
            return current

    async def domain_secrets(self, vault_ids: list[str], allowed_domains: list[str], *,
                             tenant: str, blocked: list[str] | None = None) -> list[DomainSecret]:
        """The ``environment_variable`` credentials of a session's vaults as the egress proxy's domain secrets
        (sandbox/egress/policy.py), for an environment whose network policy allows ``allowed_domains``: a
        ``limited`` credential for each of its ``allowed_hosts`` the policy allows, an ``unrestricted`` one for
        each allowed domain. The sandbox sees the placeholder under ``secret_name``; the proxy puts the value in
        requests to those hosts and masks it in what comes back. A vault deleted since the session began is
        skipped. ``blocked``: the policy is a block list instead (every host but those): a ``limited``
        credential goes to its hosts that are not blocked, and an ``unrestricted`` one, which needs an
        allowlist to say where it goes, is a 400 naming ``vault_ids``."""
        allowed = [domain.lower() for domain in allowed_domains]
        found: list[DomainSecret] = []
        for vault_id in vault_ids:
            if await self.store.get("vault", vault_id, tenant=tenant) is None:
                continue
            after: str | None = None
            while True:
                page = await self.store.page("vault_credential", tenant=tenant, parent=vault_id, after=after,
                                             limit=100, order="asc")
                for record in page.data:
                    found.extend(self._secrets_of(record, allowed, blocked))
                if not page.has_more or not page.data:
                    break
                after = page.data[-1]["id"]
        return found

    def _secrets_of(self, record: dict[str, Any], allowed: list[str],
                    blocked: list[str] | None) -> list[DomainSecret]:
        auth = record["auth"]
        if auth["type"] != "environment_variable":
            return []
        networking = auth["networking"]
        if blocked is not None:
            if networking["type"] != "limited":
                raise invalid_request(f"Invalid 'vault_ids': credential '{record['id']}' is 'unrestricted', which "
                                      "needs the environment's network 'restricted' with 'allowed_domains'.",
                                      param="vault_ids", code="invalid_value")
            domains = [host for host in networking["allowed_hosts"] if blocked_by(blocked, host) is None]
        elif networking["type"] == "limited":
            domains = [host for host in networking["allowed_hosts"] if match_entry(allowed, host) is not None]
        else:
            domains = list(allowed)
        if not domains:
            return []
        value = str(self.sealer.open(PURPOSE, record[_SEALED])["value"])
        return [DomainSecret(domain, auth["secret_name"], value) for domain in domains]


async def credentialed(vaults: VaultService | None, session: dict[str, Any], body: dict[str, Any],
                       tenant: str) -> dict[str, Any]:
    """``body`` (a session turn's response request) with each MCP tool's vault credential as its ``authorization``
    (the bridge's MCP client sends it as ``Authorization: Bearer``), opened now, for this response only: a rotated
    or deleted credential is what the next turn uses. A response never stores nor echoes ``authorization``
    (storable_tools), and the MCP client's errors redact it, so the secret reaches the MCP server and nothing
    else. ``vaults``: the session service's (None: this server keeps none)."""
    tools = session["agent"]["tools"]
    if not any(tool.get("credential_id") for tool in tools):
        return body
    if vaults is None:
        raise APIError(400, "This server keeps no vaults.", param="vault_ids", code="unsupported_value")
    sent_by_label = {sent["server_label"]: sent for sent in body["tools"] if sent["type"] == "mcp"}
    for index, tool in enumerate(tools):
        if tool["type"] == "mcp" and tool.get("credential_id"):  # the response's tools are not one for one
            sent_by_label[tool["server_label"]]["authorization"] = await vaults.mcp_token(
                session.get("vault_ids") or [], tool["credential_id"], tool["transport"]["server_url"],
                tenant=tenant, param=f"agent.tools[{index}].credential_id")
    return body
