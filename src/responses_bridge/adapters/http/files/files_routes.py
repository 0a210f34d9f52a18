"""``/v1/files`` routes of the HTTP door (OpenAI Files API shapes; also without ``/v1``).

Through Envoy these routes come straight here with ext_proc off (envoy_config.py), so an upload streams through
Envoy to this door without being held anywhere whole.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from aiohttp import web
from aiohttp.multipart import BadContentDispositionHeader, BadContentDispositionParam

from ....services.files.files import MAX_LIST_LIMIT, FileService
from ..downloads import send_blob
from ..identity import request_tenant
from ..params import json_reply, page_query
from ..routes import object_routes
from .file_uploads import create_file


@dataclass(frozen=True)
class FileRoutes:
    service: FileService

    def register(self, app: web.Application) -> None:
        # a client's malformed part header is its own 400, not a warning line in this process's log for each
        # distinct header a client cares to send
        for category in (BadContentDispositionHeader, BadContentDispositionParam):
            warnings.filterwarnings("ignore", category=category)
        with object_routes(app, "/files", "file_id", create=self.create, listing=self.list,
                           retrieve=self.service.retrieve, delete=self.service.delete) as (routes, file):
            routes.get(f"{file}/content", self.content)

    async def create(self, request: web.Request) -> web.Response:
        return json_reply(await create_file(request, self.service))

    async def list(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.list(tenant=request_tenant(request), purpose=request.query.get("purpose"),
                                                  **page_query(request, limit=MAX_LIST_LIMIT, before=False)))

    async def content(self, request: web.Request) -> web.StreamResponse:
        """The bytes as uploaded, a chunk at a time (the write waits while the client is slower than the store).
        The file is opened before the answer starts, so a file deleted meanwhile is still a JSON 404."""
        reader, file = await self.service.open_content(request.match_info["file_id"],
                                                       tenant=request_tenant(request))
        return await send_blob(request, reader, file["filename"])
