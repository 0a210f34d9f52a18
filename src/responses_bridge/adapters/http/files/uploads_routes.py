"""``/v1/uploads`` routes of the HTTP door (OpenAI's Uploads API: create, add a part, complete, cancel; also
without ``/v1``).

Through Envoy these come here as the Files API does, ext_proc off and no route buffer (envoy_config/routes.py): a
part of up to 64 MiB streams through Envoy to this door and on to the files' storage, never held whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ....services.files.uploads import MAX_PART_BYTES, UploadService
from ..identity import request_tenant
from ..params import json_object, json_reply
from ..routes import answer, api_routes
from .file_uploads import PART_FORM, answered_after_body, disk_error, read_form


@dataclass(frozen=True)
class UploadRoutes:
    service: UploadService

    def register(self, app: web.Application) -> None:
        with api_routes(app) as routes:
            routes.post("/uploads", answer(self.service.create, body="uploads.create"))
            routes.post("/uploads/{upload_id}/parts", self.add_part)
            routes.post("/uploads/{upload_id}/complete", self.complete)
            routes.post("/uploads/{upload_id}/cancel", answer(self.service.cancel, "upload_id"))

    async def add_part(self, request: web.Request) -> web.Response:
        """The form's ``data`` streamed into a new part of a pending upload (checked before a byte is read)."""
        return json_reply(await answered_after_body(request, MAX_PART_BYTES, self._add_part(request)))

    async def _add_part(self, request: web.Request) -> dict[str, Any]:
        tenant = request_tenant(request)
        upload = await self.service.pending(request.match_info["upload_id"], tenant=tenant)
        async with self.service.receive_part(upload, tenant=tenant) as received:
            await read_form(request, received, PART_FORM)
            try:
                return await self.service.add_part(upload, received)
            except OSError as exc:
                raise disk_error(exc) from None

    async def complete(self, request: web.Request) -> web.Response:
        body = await json_object(request, fields="uploads.complete")
        try:
            return json_reply(await self.service.complete(request.match_info["upload_id"], body,
                                                          tenant=request_tenant(request)))
        except OSError as exc:
            raise disk_error(exc) from None
