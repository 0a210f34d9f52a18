"""Environment templates of the Agents API (``/v1/agents/environments/templates``), a tenant's own, and their resolution
into the environment of a session or a standalone environment (``environment_template_id``).

A template is a record of the agents' store (kind ``environment_template``): the SDK's ``EnvironmentTemplate`` fields
the bridge keeps (``name``, ``created_at``, ``updated_at``) and ``_sealed``, the environment fields as given, sealed
with the deployment's key (sealing.py, purpose :data:`PURPOSE`): ``env``, ``setup_commands`` and inline files are
confidential, so neither a database file nor a log line of its statements holds them in plaintext
(protocol/containers/environment_templates.py shows only their metadata). At most :data:`MAX_TEMPLATES_PER_TENANT` a
tenant, each at most ``MAX_TEMPLATE_BYTES``. A session made from a template copies what it needs when it starts: a
template updated or deleted later leaves it as it was.
"""

from __future__ import annotations

import time
from typing import Any

from .... import ids
from ....protocol.agents.inputs import known
from ....protocol.containers.environment_templates import (
    ENVIRONMENT_FIELDS,
    TEMPLATE_FIELDS,
    apply_template,
    check_name,
    check_params,
    shown_fields,
    template_not_found,
    template_object,
)
from ....protocol.errors import APIError, invalid_request
from ....protocol.lists import list_of
from ....sealing import Sealer
from ....store.base_agents import AgentStore
from ...pagination import page_errors
from .environments import network_within

KIND = "environment_template"
MAX_TEMPLATES_PER_TENANT = 1_000


PURPOSE = "environment_template"


class TemplateService:
    def __init__(self, store: AgentStore, sealer: Sealer) -> None:
        self.store = store
        self.sealer = sealer

    def _params(self, record: dict[str, Any]) -> dict[str, Any]:
        params: dict[str, Any] = self.sealer.open(PURPOSE, record["_sealed"])
        return params

    def _set(self, record: dict[str, Any], params: dict[str, Any]) -> None:
        record["_sealed"] = self.sealer.seal(PURPOSE, params)
        record["shown"] = shown_fields(params)

    async def create(self, body: dict[str, Any], *, tenant: str) -> dict[str, Any]:
        known(body, TEMPLATE_FIELDS, "")
        name = check_name(body.get("name"))
        params = {key: body[key] for key in ENVIRONMENT_FIELDS if body.get(key) is not None}
        check_params(params)
        if await self.store.count(KIND, tenant=tenant) >= MAX_TEMPLATES_PER_TENANT:
            raise APIError(429, f"A project may keep at most {MAX_TEMPLATES_PER_TENANT} environment templates; "
                           "delete some first.", type="invalid_request_error", code="template_limit_reached")
        now = int(time.time())
        record: dict[str, Any] = {"id": ids.new_id("envtpl"), "name": name, "created_at": now, "updated_at": now}
        self._set(record, params)
        await self.store.put(KIND, record["id"], record, tenant=tenant)
        return template_object(record)

    async def _record(self, template_id: str, tenant: str, param: str = "template_id") -> dict[str, Any]:
        record = await self.store.get(KIND, template_id, tenant=tenant) if isinstance(template_id, str) else None
        if record is None:
            raise template_not_found(str(template_id), param)
        return record

    async def get(self, template_id: str, *, tenant: str) -> dict[str, Any]:
        return template_object(await self._record(template_id, tenant))

    async def update(self, template_id: str, body: dict[str, Any], *, tenant: str) -> dict[str, Any]:
        """Each field given replaces the template's; null resets it to its default; an omitted one is kept."""
        known(body, TEMPLATE_FIELDS, "")
        record = await self._record(template_id, tenant)
        params = self._params(record)
        for key in ENVIRONMENT_FIELDS:
            if key in body:
                if body[key] is None:
                    params.pop(key, None)
                else:
                    params[key] = body[key]
        check_params(params)
        if "name" in body:
            record["name"] = check_name(body["name"])
        self._set(record, params)
        record["updated_at"] = max(int(time.time()), record["updated_at"])
        await self.store.put(KIND, template_id, record, tenant=tenant)
        return template_object(record)

    async def list_templates(self, *, after: str | None, limit: int, order: str, tenant: str) -> dict[str, Any]:
        with page_errors("environment template"):
            page = await self.store.page(KIND, tenant=tenant, after=after, limit=limit, order=order)
        return list_of([template_object(record) for record in page.data], has_more=page.has_more)

    async def delete(self, template_id: str, *, tenant: str) -> dict[str, Any]:
        if not isinstance(template_id, str) or not await self.store.delete(KIND, template_id, tenant=tenant):
            raise template_not_found(str(template_id))
        return {"id": template_id, "object": "agent.environment.template.deleted", "deleted": True}

    async def resolve(self, environment: Any, *, tenant: str) -> Any:
        """``environment`` with its template (``environment_template_id``, the tenant's own) applied; any other
        environment as it is."""
        if not isinstance(environment, dict) or environment.get("environment_template_id") is None:
            return environment
        template_id = environment["environment_template_id"]
        if not isinstance(template_id, str):
            raise invalid_request("Invalid type for 'environment.environment_template_id': expected a string.",
                                  param="environment.environment_template_id", code="invalid_type")
        if environment.get("type") != "openai_hosted":
            return environment  # the type's own check names what is wrong
        if environment.get("environment_id") is not None:
            raise invalid_request("'environment.environment_id' cannot be combined with a template (an existing "
                                  "environment keeps its own configuration).", param="environment.environment_id",
                                  code="invalid_value")
        record = await self._record(template_id, tenant, "environment.environment_template_id")
        return apply_template(self._params(record), environment, within=network_within)
