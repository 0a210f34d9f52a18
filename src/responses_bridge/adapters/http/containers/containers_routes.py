"""``/v1/containers`` routes of the HTTP door (OpenAI Containers API shapes; also without ``/v1``), each as the
caller's tenant. A file is added as a ``multipart/form-data`` upload (its ``file`` part streamed into storage,
never read whole, and kept only once the form has been read to its closing boundary) or as JSON ``{"file_id"}``
naming a ``/v1/files`` file to copy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.helpers import parse_mimetype
from aiohttp.http_exceptions import HttpProcessingError

from ....protocol.errors import APIError, invalid_request
from ....services.containers.containers import MAX_LIST_LIMIT, ContainerService
from ....services.containers.shapes import container_file_object, data_path
from ..downloads import send_blob
from ..identity import request_tenant
from ..multipart_form import malformed, part_chunks, read_to_end
from ..params import json_object, json_reply, page_query
from ..routes import answer, object_routes

READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class ContainerRoutes:
    service: ContainerService

    def register(self, app: web.Application) -> None:
        with object_routes(app, "/containers", "container_id",
                           create=answer(self.service.create, body="containers.create"), listing=self.list,
                           retrieve=self.service.retrieve, delete=self.service.delete) as (routes, container):
            file = routes.objects(f"{container}/files", "container_id", "file_id", create=self.add_file,
                                  listing=self.list_files, retrieve=self.service.retrieve_file,
                                  delete=self.service.delete_file)
            routes.get(f"{file}/content", self.file_content)

    async def list(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.list(tenant=request_tenant(request), name=request.query.get("name"),
                                                  **page_query(request, limit=20, before=False)))

    async def add_file(self, request: web.Request) -> web.Response:
        tenant = request_tenant(request)
        container = await self.service.container_for_files(_container(request), tenant=tenant)
        mimetype = parse_mimetype(request.headers.get("Content-Type", ""))
        if (mimetype.type, mimetype.subtype) == ("multipart", "form-data"):
            stored = await self._upload(request, container, tenant)
            return json_reply(container_file_object(stored))
        body = await json_object(request, fields="containers.files.create")
        file_id = body.get("file_id")
        if not isinstance(file_id, str) or not file_id:
            raise invalid_request("Send the file as multipart/form-data in a 'file' field, or JSON with a "
                                  "'file_id'.", param="file_id", code="missing_required_parameter")
        return json_reply(container_file_object(await self.service.copy_file(container, file_id, tenant=tenant)))

    async def _upload(self, request: web.Request, container: Any, tenant: str) -> Any:
        if not mimetype_boundary(request):
            raise invalid_request("The multipart/form-data body has no boundary.", code="invalid_multipart")
        limit = self.service.file_bytes
        if request.content_length is not None and request.content_length > limit + 64 * 1024:
            raise APIError(413, f"A container file may be at most {limit} bytes.", type="invalid_request_error",
                           param="file", code="file_too_large")
        try:
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                if isinstance(part, BodyPartReader) and part.name == "file":
                    path = data_path(part.filename)
                    return await self.service.put_bytes(container, path, _whole_form(part, reader),
                                                        source="user", tenant=tenant)
                if isinstance(part, BodyPartReader):
                    await part.release()
        except (ValueError, AssertionError, HttpProcessingError) as error:
            raise malformed(error, request) from None
        raise invalid_request("Missing required parameter: 'file'.", param="file", code="missing_required_parameter")

    async def list_files(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.list_files(_container(request), tenant=request_tenant(request),
                                                        **page_query(request, limit=20, before=False)))

    async def file_content(self, request: web.Request) -> web.StreamResponse:
        """The file's bytes, a chunk at a time; opened before the answer starts, so a file deleted meanwhile is
        still a JSON 404."""
        reader, file = await self.service.open_file(_container(request), request.match_info["file_id"],
                                                    tenant=request_tenant(request))
        return await send_blob(request, reader, file.path.rsplit("/", 1)[-1])


def mimetype_boundary(request: web.Request) -> bool:
    return bool(parse_mimetype(request.headers.get("Content-Type", "")).parameters.get("boundary"))


async def _whole_form(part: BodyPartReader, reader: MultipartReader) -> AsyncIterator[bytes]:
    """The file part's bytes, then the rest of the form read to its closing boundary before the last chunk is
    handed on: a form cut short raises before the service keeps the file, and what it wrote is dropped."""
    async for chunk in part_chunks(part, READ_CHUNK):
        yield chunk
    await read_to_end(reader)


def _container(request: web.Request) -> str:
    return request.match_info["container_id"]


__all__ = ["MAX_LIST_LIMIT", "ContainerRoutes"]
