"""A Kubernetes API server for agent-sandbox's four kinds, and its controller, for tests and benchmarks without a
cluster: what the ``agent-sandbox`` backend (sandbox/agent_sandbox/) and the ``k8s-agent-sandbox`` client need of
a real one, served over real HTTP.

- The resources are read from the CRDs given (group, version, plural, kind, scope): any other is a 404, as on a
  server without them; ``GET /apis/<group>/<version>`` lists them (discovery: what ``doctor`` checks).
- ``POST`` creates (409 on a taken name; ``metadata.uid``, ``resourceVersion``, ``creationTimestamp`` set),
  ``GET`` reads or lists, ``DELETE`` deletes (404 when gone; ``preconditions.uid`` honoured), and ``?watch=true``
  streams ``{"type", "object"}`` lines from a ``resourceVersion`` (``0``/unset: the current objects as ADDED
  first) filtered by ``fieldSelector=metadata.name=…``, until ``timeoutSeconds``.
- The controller, as agent-sandbox's does it: a ``SandboxClaim`` of a ``SandboxWarmPool`` with ready pods takes one
  (a stand-in pod started by ``start_pod``: standin_pod.py), a ``Sandbox`` is made for it, and the claim's
  status gets ``sandbox.name``, ``podIPs`` and ``Ready=True`` in one update. A pool not found is ``Ready=False``
  ``WarmPoolNotFound``; a pool set ``stalled`` never readies a claim (the deadline's test). Deleting a claim deletes
  its Sandbox and stops its pod; a claim past ``spec.lifecycle.shutdownTime`` is deleted (``Delete`` policy).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson
from aiohttp import web

from .. import fast_yaml

CLAIMS = ("extensions.agents.x-k8s.io", "sandboxclaims")
SANDBOXES = ("agents.x-k8s.io", "sandboxes")
POOLS = ("extensions.agents.x-k8s.io", "sandboxwarmpools")


class StandInPod(Protocol):
    """A sandbox pod the controller started: its IP, and its end."""

    @property
    def ip(self) -> str: ...

    async def stop(self) -> None: ...


PodStarter = Callable[[dict[str, Any]], Awaitable[StandInPod]]
"""Starts a pod for a claim (given the claim object)."""


@dataclass(frozen=True, slots=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool


def load_resources(*paths: Path) -> dict[tuple[str, str], Resource]:
    """(group, plural) → the served resource, from the CRDs in the files ``paths`` (each version ``served``)."""
    found: dict[tuple[str, str], Resource] = {}
    for path in paths:
        for document in fast_yaml.load_all(path.read_text()):
            if not document or document.get("kind") != "CustomResourceDefinition":
                continue
            spec = document["spec"]
            for version in spec["versions"]:
                if version.get("served"):
                    found[(spec["group"], spec["names"]["plural"])] = Resource(
                        spec["group"], version["name"], spec["names"]["plural"], spec["names"]["kind"],
                        spec["scope"] == "Namespaced")
    return found


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str) -> web.Response:
    return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                              "reason": reason, "code": code}, status=code)


@dataclass
class FakeKube:
    """The server's state: objects by (group, plural, namespace, name), the event log watches read, the pods."""

    resources: dict[tuple[str, str], Resource]
    start_pod: PodStarter
    ready_delay: float = 0.0
    objects: dict[tuple[str, str, str, str], dict[str, Any]] = field(default_factory=dict)
    events: list[tuple[int, str, tuple[str, str, str, str], dict[str, Any]]] = field(default_factory=list)
    pods: dict[tuple[str, str], StandInPod] = field(default_factory=dict)
    stalled: set[str] = field(default_factory=set)
    """Pools that never ready a claim (no ready pod, none coming)."""
    denied: set[tuple[str, str]] = field(default_factory=set)
    """(resource, verb) pairs a SelfSubjectAccessReview answers not allowed (every other is allowed)."""
    requests: list[tuple[str, str]] = field(default_factory=list)
    """(method, path) of every request, for tests that check what the client asked."""
    _versions: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _deleting: set[tuple[str, str, str, str]] = field(default_factory=set)

    # --- the store -------------------------------------------------------------------------------------------

    async def _record(self, kind: str, key: tuple[str, str, str, str], obj: dict[str, Any]) -> None:
        version = next(self._versions)
        obj["metadata"]["resourceVersion"] = str(version)
        if kind == "DELETED":
            self.objects.pop(key, None)
        else:
            self.objects[key] = obj
        self.events.append((version, kind, key, orjson.loads(orjson.dumps(obj))))
        async with self._changed:
            self._changed.notify_all()

    async def create(self, group: str, plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        metadata = body.setdefault("metadata", {})
        metadata.update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        await self._record("ADDED", (group, plural, namespace, metadata["name"]), body)
        if (group, plural) == CLAIMS:
            self._spawn(self._bind_claim(namespace, metadata["name"]))
        return body

    async def delete(self, key: tuple[str, str, str, str]) -> dict[str, Any] | None:
        obj = self.objects.get(key)
        if obj is None or key in self._deleting:  # gone, or going (a second delete while its pod stops)
            return obj
        self._deleting.add(key)
        try:
            await self._delete_dependents(key, obj)
            await self._record("DELETED", key, obj)
        finally:
            self._deleting.discard(key)
        return obj

    async def _delete_dependents(self, key: tuple[str, str, str, str], obj: dict[str, Any]) -> None:
        # dependents first, as Kubernetes' foreground deletion: a claim seen deleted has no Sandbox left, and a
        # Sandbox seen deleted no pod still running (its files gone with it)
        if key[:2] == CLAIMS:
            name = ((obj.get("status") or {}).get("sandbox") or {}).get("name")
            if name:
                await self.delete((*SANDBOXES, key[2], name))
        if key[:2] == SANDBOXES:
            pod = self.pods.pop((key[2], key[3]), None)
            if pod is not None:
                await pod.stop()

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- the controller --------------------------------------------------------------------------------------

    async def _bind_claim(self, namespace: str, name: str) -> None:
        claim = self.objects.get((*CLAIMS, namespace, name))
        if claim is None:
            return
        pool = claim["spec"]["warmPoolRef"]["name"]
        if (*POOLS, namespace, pool) not in self.objects:
            claim["status"] = {"conditions": [{"type": "Ready", "status": "False", "reason": "WarmPoolNotFound",
                                               "message": f"SandboxWarmPool {pool} not found",
                                               "lastTransitionTime": _now()}]}
            await self._record("MODIFIED", (*CLAIMS, namespace, name), claim)
            return
        if pool in self.stalled:
            return
        if self.ready_delay:
            await asyncio.sleep(self.ready_delay)
        pod = await self.start_pod(claim)
        claim_key = (*CLAIMS, namespace, name)
        if claim_key not in self.objects or claim_key in self._deleting:  # deleted while the pod started
            await pod.stop()
            return
        sandbox_name = f"{pool}-{uuid.uuid4().hex[:5]}"
        self.pods[(namespace, sandbox_name)] = pod
        ready = {"type": "Ready", "status": "True", "reason": "SandboxReady", "message": "Pod is Ready",
                 "lastTransitionTime": _now()}
        sandbox = {"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
                   "metadata": {"name": sandbox_name, "annotations": {"agents.x-k8s.io/pod-name": sandbox_name},
                                "ownerReferences": [{"apiVersion": "extensions.agents.x-k8s.io/v1beta1",
                                                     "kind": "SandboxClaim", "name": name,
                                                     "uid": claim["metadata"]["uid"]}]},
                   "spec": {"podTemplate": {"spec": {"containers": []}}},
                   "status": {"podIPs": [pod.ip], "conditions": [ready], "replicas": 1}}
        await self.create(*SANDBOXES, namespace, sandbox)
        claim["status"] = {"sandbox": {"name": sandbox_name, "podIPs": [pod.ip]}, "conditions": [ready]}
        await self._record("MODIFIED", (*CLAIMS, namespace, name), claim)

    async def reap(self) -> None:
        """Delete the claims past their shutdown time (the controller's backstop for a crashed client)."""
        now = datetime.now(UTC)
        for key, claim in list(self.objects.items()):
            lifecycle = (claim.get("spec") or {}).get("lifecycle") or {}
            when = lifecycle.get("shutdownTime")
            if key[:2] == CLAIMS and when and lifecycle.get("shutdownPolicy", "Delete") == "Delete" \
                    and datetime.fromisoformat(when.replace("Z", "+00:00")) <= now:
                await self.delete(key)

    async def _reaper(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            await self.reap()

    # --- HTTP ------------------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/apis/{group}/{version}", self._discovery)
        app.router.add_post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", self._access_review)
        app.router.add_route("*", "/apis/{group}/{version}/namespaces/{namespace}/{plural}", self._collection)
        app.router.add_route("*", "/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}", self._item)

        async def reaper(app: web.Application) -> Any:
            task = asyncio.ensure_future(self._reaper())
            yield
            task.cancel()
            for pod in list(self.pods.values()):
                await pod.stop()
            for pending in list(self._tasks):
                pending.cancel()

        app.cleanup_ctx.append(reaper)
        return app

    def _resource(self, request: web.Request) -> Resource | None:
        self.requests.append((request.method, request.path))
        found = self.resources.get((request.match_info["group"], request.match_info.get("plural", "")))
        if found is None or found.version != request.match_info["version"]:
            return None
        return found

    async def _discovery(self, request: web.Request) -> web.Response:
        group, version = request.match_info["group"], request.match_info["version"]
        served = [r for r in self.resources.values() if r.group == group and r.version == version]
        if not served:
            return _status(404, "NotFound", "the server could not find the requested resource")
        return web.json_response({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}",
                                  "resources": [{"name": r.plural, "kind": r.kind, "namespaced": r.namespaced,
                                                 "singularName": r.kind.lower(),
                                                 "verbs": ["create", "delete", "get", "list", "watch"]}
                                                for r in served]})

    async def _collection(self, request: web.Request) -> web.StreamResponse:
        resource = self._resource(request)
        if resource is None:
            return _status(404, "NotFound", "the server could not find the requested resource")
        namespace = request.match_info["namespace"]
        if request.method == "POST":
            body = await request.json()
            if body.get("kind") != resource.kind or body.get("apiVersion") != f"{resource.group}/{resource.version}":
                return _status(400, "BadRequest", f"expected kind {resource.kind}")
            name = (body.get("metadata") or {}).get("name")
            if not name:
                return _status(422, "Invalid", "metadata.name: Required value")
            if (resource.group, resource.plural, namespace, name) in self.objects:
                return _status(409, "AlreadyExists", f'{resource.plural} "{name}" already exists')
            return web.json_response(await self.create(resource.group, resource.plural, namespace, body),
                                     status=201)
        if request.method != "GET":
            return _status(405, "MethodNotAllowed", "method not allowed")
        selected = request.query.get("fieldSelector", "")
        name = selected.removeprefix("metadata.name=") if selected.startswith("metadata.name=") else None
        if request.query.get("watch", "").lower() in ("true", "1"):
            return await self._watch(request, resource, namespace, name)
        items = [obj for (group, plural, ns, obj_name), obj in self.objects.items()
                 if (group, plural, ns) == (resource.group, resource.plural, namespace)
                 and (name is None or obj_name == name)]
        return web.json_response({"apiVersion": f"{resource.group}/{resource.version}", "kind": f"{resource.kind}List",
                                  "metadata": {"resourceVersion": str(self.events[-1][0] if self.events else 0)},
                                  "items": items})

    async def _watch(self, request: web.Request, resource: Resource, namespace: str,
                     name: str | None) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        since = int(request.query.get("resourceVersion") or 0)
        timeout = float(request.query.get("timeoutSeconds") or 1800)

        def matches(key: tuple[str, str, str, str]) -> bool:
            return key[:3] == (resource.group, resource.plural, namespace) and (name is None or key[3] == name)

        position = len(self.events)
        if since == 0:
            for key, obj in list(self.objects.items()):
                if matches(key):
                    await response.write(orjson.dumps({"type": "ADDED", "object": obj}) + b"\n")
        else:
            position = next((i for i, event in enumerate(self.events) if event[0] > since), len(self.events))
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            async with asyncio.timeout(timeout):
                while True:
                    while position < len(self.events):
                        _, kind, key, obj = self.events[position]
                        position += 1
                        if matches(key):
                            await response.write(orjson.dumps({"type": kind, "object": obj}) + b"\n")
                    async with self._changed:
                        await self._changed.wait_for(functools.partial(self._after, position))
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    def _after(self, position: int) -> bool:
        return position < len(self.events)

    async def _access_review(self, request: web.Request) -> web.Response:
        """A SelfSubjectAccessReview: allowed unless ``denied`` names its resource and verb."""
        body = await request.json()
        attributes = (body.get("spec") or {}).get("resourceAttributes") or {}
        allowed = (attributes.get("resource"), attributes.get("verb")) not in self.denied
        return web.json_response({**body, "status": {"allowed": allowed}}, status=201)

    def _view(self, key: tuple[str, str, str, str], obj: dict[str, Any]) -> dict[str, Any]:
        """An object as read: a warm pool's ready pods are its replicas, none while it is stalled."""
        if key[:2] == POOLS:
            replicas = int(obj.get("spec", {}).get("replicas", 1))
            ready = 0 if key[3] in self.stalled else replicas
            return {**obj, "status": {"replicas": replicas, "readyReplicas": ready}}
        return obj

    async def _item(self, request: web.Request) -> web.Response:
        resource = self._resource(request)
        if resource is None:
            return _status(404, "NotFound", "the server could not find the requested resource")
        key = (resource.group, resource.plural, request.match_info["namespace"], request.match_info["name"])
        obj = self.objects.get(key)
        if obj is None:
            return _status(404, "NotFound", f'{resource.plural} "{key[3]}" not found')
        if request.method == "GET":
            return web.json_response(self._view(key, obj))
        if request.method == "DELETE":
            if request.can_read_body:
                options = await request.json()
                wanted = (options.get("preconditions") or {}).get("uid")
                if wanted and wanted != obj["metadata"]["uid"]:
                    return _status(409, "Conflict", "Precondition failed: UID in precondition does not match")
            await self.delete(key)
            return web.json_response(obj)
        return _status(405, "MethodNotAllowed", "method not allowed")

    def live(self, group_plural: tuple[str, str]) -> list[str]:
        """Names of the live objects of one kind (tests: which claims and sandboxes are left)."""
        return [key[3] for key in self.objects if key[:2] == group_plural]
