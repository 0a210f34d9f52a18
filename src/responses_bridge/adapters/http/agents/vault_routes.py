"""``/v1/vaults`` routes of the HTTP door (``client.beta.agents.vaults`` and its ``credentials``; also without
``/v1``): vaults and credentials, a tenant's own, never a secret in an answer (services/agents/vaults/vaults.py). The
Envoy door routes ``/v1/vaults`` here (envoy_config/routes.py)."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from ....protocol.agents.vaults import statuses
from ....services.agents.vaults.vaults import VaultService
from ..identity import request_tenant
from ..params import json_reply, metadata_query, page_query
from ..routes import answer, api_routes


def status_query(request: web.Request) -> tuple[str, ...]:
    """``status=active`` or ``status[]=active&status[]=archived``; both when none is given."""
    return statuses([*request.query.getall("status", []), *request.query.getall("status[]", [])])


@dataclass(frozen=True)
class VaultRoutes:
    vaults: VaultService

    def register(self, app: web.Application) -> None:
        vault = "/vaults/{vault_id}"
        credential = f"{vault}/credentials/{{credential_id}}"
        with api_routes(app) as routes:
            routes.post("/vaults", answer(self.vaults.create, body=True))
            routes.get("/vaults", self.list)
            routes.get(vault, answer(self.vaults.get, "vault_id"))
            routes.post(vault, answer(self.vaults.update, "vault_id", body=True))
            routes.delete(vault, answer(self.vaults.delete, "vault_id"))
            routes.post(f"{vault}/credentials", answer(self.vaults.create_credential, "vault_id", body=True))
            routes.get(f"{vault}/credentials", self.list_credentials)
            routes.get(credential, answer(self.vaults.get_credential, "vault_id", "credential_id"))
            routes.post(credential, answer(self.vaults.update_credential, "vault_id", "credential_id", body=True))
            routes.delete(credential, answer(self.vaults.delete_credential, "vault_id", "credential_id"))

    async def list(self, request: web.Request) -> web.Response:
        return json_reply(await self.vaults.list_vaults(**page_query(request, before=False),
                                                        metadata=metadata_query(request),
                                                        statuses=status_query(request),
                                                        tenant=request_tenant(request)))

    async def list_credentials(self, request: web.Request) -> web.Response:
        return json_reply(await self.vaults.list_credentials(request.match_info["vault_id"],
                                                             **page_query(request, before=False),
                                                             metadata=metadata_query(request),
                                                             statuses=status_query(request),
                                                             tenant=request_tenant(request)))
