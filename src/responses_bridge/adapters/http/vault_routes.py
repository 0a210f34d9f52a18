"""``/v1/vaults`` routes of the HTTP door (``client.beta.agents.vaults`` and its ``credentials``; also without
``/v1``): vaults and credentials, a tenant's own, never a secret in an answer (services/vaults.py). The Envoy door
routes ``/v1/vaults`` here (envoy_config/routes.py)."""

from __future__ import annotations

from aiohttp import web

from ...protocol.vaults import statuses
from ...services.vaults import VaultService
from .identity import request_tenant
from .params import json_object, json_reply, metadata_query, page_query
from .routes import api_routes


def status_query(request: web.Request) -> tuple[str, ...]:
    """``status=active`` or ``status[]=active&status[]=archived``; both when none is given."""
    return statuses([*request.query.getall("status", []), *request.query.getall("status[]", [])])


class VaultRoutes:
    def __init__(self, vaults: VaultService) -> None:
        self.vaults = vaults

    def register(self, app: web.Application) -> None:
        with api_routes(app) as routes:
            vault = "/vaults/{vault_id}"
            credential = f"{vault}/credentials/{{credential_id}}"
            routes.post("/vaults", self.create)
            routes.get("/vaults", self.list)
            routes.get(vault, self.retrieve)
            routes.post(vault, self.update)
            routes.delete(vault, self.delete)
            routes.post(f"{vault}/credentials", self.create_credential)
            routes.get(f"{vault}/credentials", self.list_credentials)
            routes.get(credential, self.retrieve_credential)
            routes.post(credential, self.update_credential)
            routes.delete(credential, self.delete_credential)

    async def create(self, request: web.Request) -> web.Response:
        return json_reply(await self.vaults.create(await json_object(request), tenant=request_tenant(request)))

    async def list(self, request: web.Request) -> web.Response:
        return json_reply(await self.vaults.list_vaults(**page_query(request, before=False),
                                                        metadata=metadata_query(request),
                                                        statuses=status_query(request),
                                                        tenant=request_tenant(request)))

    async def retrieve(self, request: web.Request) -> web.Response:
        return json_reply(await self.vaults.get(request.match_info["vault_id"], tenant=request_tenant(request)))

    async def update(self, request: web.Request) -> web.Response:
        return json_reply(await self.vaults.update(request.match_info["vault_id"], await json_object(request),
                                                   tenant=request_tenant(request)))

    async def delete(self, request: web.Request) -> web.Response:
        return json_reply(await self.vaults.delete(request.match_info["vault_id"], tenant=request_tenant(request)))

    async def create_credential(self, request: web.Request) -> web.Response:
        return json_reply(await self.vaults.create_credential(request.match_info["vault_id"],
                                                              await json_object(request),
                                                              tenant=request_tenant(request)))

    async def list_credentials(self, request: web.Request) -> web.Response:
        return json_reply(await self.vaults.list_credentials(request.match_info["vault_id"],
                                                             **page_query(request, before=False),
                                                             metadata=metadata_query(request),
                                                             statuses=status_query(request),
                                                             tenant=request_tenant(request)))

    async def retrieve_credential(self, request: web.Request) -> web.Response:
        return json_reply(await self.vaults.get_credential(request.match_info["vault_id"],
                                                           request.match_info["credential_id"],
                                                           tenant=request_tenant(request)))

    async def update_credential(self, request: web.Request) -> web.Response:
        return json_reply(await self.vaults.update_credential(request.match_info["vault_id"],
                                                              request.match_info["credential_id"],
                                                              await json_object(request),
                                                              tenant=request_tenant(request)))

    async def delete_credential(self, request: web.Request) -> web.Response:
        return json_reply(await self.vaults.delete_credential(request.match_info["vault_id"],
                                                              request.match_info["credential_id"],
                                                              tenant=request_tenant(request)))
