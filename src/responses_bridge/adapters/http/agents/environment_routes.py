"""``/v1/agents/environments`` routes of the HTTP door (``client.beta.agents.environments``): environment templates
(services/agents/environments/templates.py), standalone environments and the live files of an environment
(services/agents/environments/hosted.py). Registered by agents_routes.py before its
``/agents/{agent_id}`` routes, which would take ``environments`` for an agent's id otherwise."""

from __future__ import annotations

from aiohttp import web

from ....run.tools.shell import HostedShellService
from ....sealing import Sealer
from ....services.agents.environments.hosted import EnvironmentService
from ....services.agents.environments.setup import EnvironmentSetup
from ....services.agents.environments.templates import TemplateService
from ....services.agents.sessions import SessionService
from ....services.tools.hosted_shell import HostedShell
from ..identity import request_tenant
from ..params import int_query, json_object, json_reply, page_query
from ..routes import api_routes


class EnvironmentRoutes:
    def __init__(self, sessions: SessionService, shell: HostedShellService | None, sealer: Sealer) -> None:
        setup = EnvironmentSetup(shell, sealer, sessions.store)
        sessions.environments.setup = setup  # setup commands and env (services/agents/environments/setup.py)
        if isinstance(shell, HostedShell):
            shell.env_for = setup.env_for  # an environment's env for every command of its container
        sessions.templates = self.templates = TemplateService(sessions.store, sealer)
        self.environments = EnvironmentService(sessions.store, sessions.environments, self.templates)

    def register(self, app: web.Application) -> None:
        with api_routes(app) as routes:
            templates = "/agents/environments/templates"
            routes.post(templates, self.create_template)
            routes.get(templates, self.list_templates)
            routes.get(f"{templates}/{{template_id}}", self.retrieve_template)
            routes.post(f"{templates}/{{template_id}}", self.update_template)
            routes.delete(f"{templates}/{{template_id}}", self.delete_template)
            environments = "/agents/environments"
            routes.post(environments, self.create)
            routes.get(environments, self.list)
            routes.get(f"{environments}/{{environment_id}}", self.retrieve)
            routes.post(f"{environments}/{{environment_id}}/files", self.upload_file)
            routes.get(f"{environments}/{{environment_id}}/files", self.list_files)

    # --- templates ------------------------------------------------------------------------------------------

    async def create_template(self, request: web.Request) -> web.Response:
        return json_reply(await self.templates.create(await json_object(request), tenant=request_tenant(request)))

    async def list_templates(self, request: web.Request) -> web.Response:
        return json_reply(await self.templates.list_templates(**page_query(request, before=False),
                                                              tenant=request_tenant(request)))

    async def retrieve_template(self, request: web.Request) -> web.Response:
        return json_reply(await self.templates.get(request.match_info["template_id"],
                                                   tenant=request_tenant(request)))

    async def update_template(self, request: web.Request) -> web.Response:
        return json_reply(await self.templates.update(request.match_info["template_id"], await json_object(request),
                                                      tenant=request_tenant(request)))

    async def delete_template(self, request: web.Request) -> web.Response:
        return json_reply(await self.templates.delete(request.match_info["template_id"],
                                                      tenant=request_tenant(request)))

    # --- environments and their files -----------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        return json_reply(await self.environments.create(await json_object(request),
                                                         tenant=request_tenant(request)))

    async def list(self, request: web.Request) -> web.Response:
        return json_reply(await self.environments.list_environments(**page_query(request, before=False),
                                                                    kind=request.query.get("type"),
                                                                    tenant=request_tenant(request)))

    async def retrieve(self, request: web.Request) -> web.Response:
        return json_reply(await self.environments.retrieve(request.match_info["environment_id"],
                                                           tenant=request_tenant(request)))

    async def upload_file(self, request: web.Request) -> web.Response:
        return json_reply(await self.environments.upload_file(request.match_info["environment_id"],
                                                              await json_object(request),
                                                              tenant=request_tenant(request)))

    async def list_files(self, request: web.Request) -> web.Response:
        query = request.query
        return json_reply(await self.environments.list_files(
            request.match_info["environment_id"], path=query.get("path"), limit=int_query(request, "limit", 100),
            order=query.get("order", "desc"), page=query.get("page"), tenant=request_tenant(request)))
