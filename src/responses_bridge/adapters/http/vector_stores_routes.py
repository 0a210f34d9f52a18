"""``/v1/vector_stores`` routes of the HTTP door (OpenAI Vector Stores API shapes; also without ``/v1``), each as the
caller's tenant (the service and the store keep every tenant to its own)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ...services.vector_stores import VectorStoreService
from .identity import request_tenant
from .params import json_object, json_reply, page_query
from .routes import api_routes


class VectorStoreRoutes:
    def __init__(self, service: VectorStoreService) -> None:
        self.service = service

    def register(self, app: web.Application) -> None:
        with api_routes(app) as routes:
            base = "/vector_stores"
            store = f"{base}/{{vector_store_id}}"
            routes.post(base, self.create)
            routes.get(base, self.list_stores)
            routes.get(store, self.retrieve)
            routes.post(store, self.update)
            routes.delete(store, self.delete)
            routes.post(f"{store}/search", self.search)
            routes.post(f"{store}/files", self.add_file)
            routes.get(f"{store}/files", self.list_files)
            routes.get(f"{store}/files/{{file_id}}", self.retrieve_file)
            routes.post(f"{store}/files/{{file_id}}", self.update_file)
            routes.delete(f"{store}/files/{{file_id}}", self.delete_file)
            routes.get(f"{store}/files/{{file_id}}/content", self.file_content)
            routes.post(f"{store}/file_batches", self.create_batch)
            routes.get(f"{store}/file_batches/{{batch_id}}", self.retrieve_batch)
            routes.post(f"{store}/file_batches/{{batch_id}}/cancel", self.cancel_batch)
            routes.get(f"{store}/file_batches/{{batch_id}}/files", self.list_batch_files)

    async def create(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.create(await json_object(request, optional=True,
                                                                      fields="vector_stores.create"),
                                                    tenant=request_tenant(request)))

    async def list_stores(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.list_stores(tenant=request_tenant(request), **_page(request)))

    async def retrieve(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.get(_store(request), tenant=request_tenant(request)))

    async def update(self, request: web.Request) -> web.Response:
        body = await json_object(request, optional=True, fields="vector_stores.update")
        return json_reply(await self.service.update(_store(request), body,
                                                    tenant=request_tenant(request)))

    async def delete(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.delete(_store(request), tenant=request_tenant(request)))

    async def search(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.search_store(_store(request),
                                                          await json_object(request, fields="vector_stores.search"),
                                                          tenant=request_tenant(request)))

    async def add_file(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.add_file(_store(request),
                                                      await json_object(request, fields="vector_stores.files.create"),
                                                      tenant=request_tenant(request)))

    async def list_files(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.list_files(_store(request), tenant=request_tenant(request),
                                                        status=request.query.get("filter"), **_page(request)))

    async def retrieve_file(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.get_file(_store(request), request.match_info["file_id"],
                                                      tenant=request_tenant(request)))

    async def update_file(self, request: web.Request) -> web.Response:
        body = await json_object(request, fields="vector_stores.files.update")
        return json_reply(await self.service.update_file(_store(request), request.match_info["file_id"], body,
                                                         tenant=request_tenant(request)))

    async def delete_file(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.delete_file(_store(request), request.match_info["file_id"],
                                                         tenant=request_tenant(request)))

    async def file_content(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.file_content(_store(request), request.match_info["file_id"],
                                                          tenant=request_tenant(request)))

    async def create_batch(self, request: web.Request) -> web.Response:
        body = await json_object(request, fields="vector_stores.file_batches.create")
        return json_reply(await self.service.create_batch(_store(request), body,
                                                          tenant=request_tenant(request)))

    async def retrieve_batch(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.get_batch(_store(request), request.match_info["batch_id"],
                                                       tenant=request_tenant(request)))

    async def cancel_batch(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.cancel_batch(_store(request), request.match_info["batch_id"],
                                                          tenant=request_tenant(request)))

    async def list_batch_files(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.list_files(
            _store(request), tenant=request_tenant(request), status=request.query.get("filter"),
            batch_id=request.match_info["batch_id"], **_page(request)))


def _store(request: web.Request) -> str:
    return request.match_info["vector_store_id"]


def _page(request: web.Request) -> dict[str, Any]:
    return page_query(request)
