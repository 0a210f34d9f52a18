"""``/v1/vector_stores`` routes of the HTTP door (OpenAI Vector Stores API shapes; also without ``/v1``), each as the
caller's tenant (the service and the store keep every tenant to its own)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ....services.files.vector_stores import VectorStoreService
from ..identity import request_tenant
from ..params import json_reply, page_query
from ..routes import answer, object_routes


@dataclass(frozen=True)
class VectorStoreRoutes:
    service: VectorStoreService

    def register(self, app: web.Application) -> None:
        create = answer(self.service.create, body="vector_stores.create", optional=True)
        update = answer(self.service.update, "vector_store_id", body="vector_stores.update", optional=True)
        with object_routes(app, "/vector_stores", "vector_store_id", create=create, listing=self.list_stores,
                           retrieve=self.service.get, update=update,
                           delete=self.service.delete) as (routes, store):
            batch = f"{store}/file_batches/{{batch_id}}"
            routes.post(f"{store}/search", answer(self.service.search_store, "vector_store_id",
                                                  body="vector_stores.search"))
            file = routes.objects(
                f"{store}/files", "vector_store_id", "file_id",
                create=answer(self.service.add_file, "vector_store_id", body="vector_stores.files.create"),
                listing=self.list_files, retrieve=self.service.get_file,
                update=answer(self.service.update_file, "vector_store_id", "file_id",
                              body="vector_stores.files.update"),
                delete=self.service.delete_file)
            routes.get(f"{file}/content", answer(self.service.file_content, "vector_store_id", "file_id"))
            routes.post(f"{store}/file_batches", answer(self.service.create_batch, "vector_store_id",
                                                        body="vector_stores.file_batches.create"))
            routes.get(batch, answer(self.service.get_batch, "vector_store_id", "batch_id"))
            routes.post(f"{batch}/cancel", answer(self.service.cancel_batch, "vector_store_id", "batch_id"))
            routes.get(f"{batch}/files", self.list_batch_files)

    async def list_stores(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.list_stores(tenant=request_tenant(request), **_page(request)))

    async def list_files(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.list_files(_store(request), tenant=request_tenant(request),
                                                        status=request.query.get("filter"), **_page(request)))

    async def list_batch_files(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.list_files(
            _store(request), tenant=request_tenant(request), status=request.query.get("filter"),
            batch_id=request.match_info["batch_id"], **_page(request)))


def _store(request: web.Request) -> str:
    return request.match_info["vector_store_id"]


def _page(request: web.Request) -> dict[str, Any]:
    return page_query(request)
