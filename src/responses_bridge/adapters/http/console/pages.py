"""The console's pages: one handler per page, each reading as the viewer's tenant (an operator's choice of tenant),
rendered by jinja2 with every value escaped, answered with a strict Content-Security-Policy (nothing inline, nothing
from elsewhere).

    GET  /console/logs                  stored responses, newest first, filtered (?before=: the newer page)
    GET  /console/logs.csv              the same query's rows as CSV (exports.py: bounded, streamed)
    GET  /console/logs/{response_id}    one response as a conversation, with its chain (?input=, ?output=: pages)
    GET  /console/logs/{response_id}/raw  its stored JSON, masked as every page is, with a copy button
    GET  /console/logs/{response_id}/live a running background response's text as it streams (SSE: live.py)
    GET  /console/logs/{response_id}/{input|output}/{position}  one of its items on a page of its own
    GET  /console/logs/{response_id}/trace/{n}  one span of its trace: attributes, input and output (trace.py)
    GET  /console/chats, /console/chats/{id}  stored chat completions, and one with its messages
    GET  /console/sessions              agent sessions
    GET  /console/sessions/{id}         a session's timeline, approvals, live desktop, artifacts
    POST /console/sessions/{id}/approve an approval answered (the API's own service call)
    GET  /console/sessions/{id}/traces  its turns' spans as waterfalls (kept with no extra: trace.py)
    GET  /console/sessions/{id}/artifacts/{artifact_id}  an artifact's bytes, as a download
    GET  /console/batches, /console/batches/{id}  batches: status, counts, throughput, errors, their files
    GET  /console/batches/{id}/files/{file_id}  one of a batch's files, as a download
    GET  /console/usage                 requests, tokens and spend over time; /console/usage.csv: its totals
    GET  /console/operations            pools, memory, desktops, runs, upstreams, keys (operators)
    POST /console/operations/keys       a key made; POST …/keys/{id}/revoke: a key revoked (operators)
    GET  /console/sign-in, POST /console/sign-in, POST /console/sign-out
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from ....observability import tracing
from ....protocol.errors import APIError
from ....runtime import Runtime
from ....services.agents.sessions import SessionService
from ....services.agents.traces import SessionTraces
from ....services.tenancy.tenant_names import tenant_name_problem
from ....store.records import InvalidCursor
from ..agents.agents_routes import SESSIONS
from ..desktop_watch_tokens import WatchTokens
from ..downloads import send_blob
from . import batches, chats, detail, exports, live, logs, operations, raw, sessions, trace, usage
from .page_tools import HEADERS, linker, milliseconds, position, posted_form, see_other, suffix, tenant_query
from .pricing import Prices, money
from .sign_in import SignIn, Viewer, check_change, return_path, sign_in_location
from .usage import Usage
from .visible import visible

HERE = Path(__file__).parent
STATIC = {"console.css": "text/css", "console.js": "text/javascript"}
# the one script, a file of our own (the CSP allows no other and nothing inline): a copy button, a running response
# followed live; every page works without it as plain HTML forms and links
Page = Callable[[web.Request, Viewer, re.Match[str]], Awaitable[web.StreamResponse]]


class Console:
    def __init__(self, runtime: Runtime, watch_tokens: WatchTokens, agents: web.Application | None) -> None:
        """``agents``: the Agents API's application (adapters/http/agents/capability.py), None on a door without it."""
        self.runtime = runtime
        self.watch_tokens = watch_tokens
        self.sign_in = SignIn(runtime)
        self.revoking = asyncio.Lock()
        self.sessions: SessionService | None = agents.get(SESSIONS) if agents is not None else None
        self.traces = SessionTraces(runtime.agent_store)
        self.prices = Prices(runtime.settings.console_prices)
        self.templates = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                                            undefined=jinja2.StrictUndefined, finalize=visible)
        self.routes: list[tuple[str, re.Pattern[str], Page, bool]] = [  # method, path, page, operators only
            ("GET", re.compile(r"/logs"), self.logs, False),
            ("GET", re.compile(r"/logs\.csv"), self.logs_csv, False),
            ("GET", re.compile(r"/logs/(?P<id>[\w.-]{1,200})"), self.response, False),
            ("GET", re.compile(r"/logs/(?P<id>[\w.-]{1,200})/raw"), self.response_raw, False),
            ("GET", re.compile(r"/logs/(?P<id>[\w.-]{1,200})/live"), self.response_live, False),
            ("GET", re.compile(r"/logs/(?P<id>[\w.-]{1,200})/(?P<kind>input|output)/(?P<position>[0-9]{1,9})"),
             self.response_item, False),
            ("GET", re.compile(r"/logs/(?P<id>[\w.-]{1,200})/trace/(?P<span>[0-9]{1,4})"), self.trace_span, False),
            ("GET", re.compile(r"/chats"), self.chat_list, False),
            ("GET", re.compile(r"/chats/(?P<id>[\w.-]{1,200})"), self.chat, False),
            ("GET", re.compile(r"/sessions"), self.session_list, False),
            ("GET", re.compile(r"/sessions/(?P<id>[\w.-]{1,200})"), self.session, False),
            ("POST", re.compile(r"/sessions/(?P<id>[\w.-]{1,200})/approve"), self.approve, False),
            ("GET", re.compile(r"/sessions/(?P<id>[\w.-]{1,200})/traces"), self.session_traces, False),
            ("GET", re.compile(r"/sessions/(?P<id>[\w.-]{1,200})/artifacts/(?P<artifact>[\w.-]{1,200})"),
             self.artifact, False),
            ("GET", re.compile(r"/batches"), self.batch_list, False),
            ("GET", re.compile(r"/batches/(?P<id>[\w.-]{1,200})"), self.batch, False),
            ("GET", re.compile(r"/batches/(?P<id>[\w.-]{1,200})/files/(?P<file>[\w.-]{1,200})"), self.batch_file,
             False),
            ("GET", re.compile(r"/usage"), self.usage, False),
            ("GET", re.compile(r"/usage\.csv"), self.usage_csv, False),
            ("GET", re.compile(r"/operations"), self.operations, True),
            ("POST", re.compile(r"/operations/keys"), self.create_key, True),
            ("POST", re.compile(r"/operations/keys/(?P<id>[0-9a-f]{1,64})/revoke"), self.revoke_key, True),
        ]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path[len("/console"):] or "/"
        try:
            if path.startswith("/static/"):
                return self.static(path[len("/static/"):])
            if path == "/sign-in":
                return await self.sign_in_page(request)
            viewer = await self.sign_in.viewer(request)
            if path == "/sign-out" and request.method == "POST":
                return await self.sign_out(request, viewer)
            if viewer is None:  # back to the page asked for once signed in (a GET's own path, nothing else)
                return see_other(sign_in_location(request))
            if path in ("/", ""):
                return see_other("/console/logs")
            for method, pattern, page, operators in self.routes:
                match = pattern.fullmatch(path)
                if match is not None and method == request.method:
                    if operators and not viewer.operator:
                        raise APIError(403, "Operations are for an operator's key (keys create --operator).",
                                       code="operator_only")
                    return await page(request, viewer, match)
            raise APIError(404, "No such page in the console.", code="not_found")
        except APIError as error:
            return self.render("error.html", None, request, status=error.status, message=error.message,
                               code=error.status)
        except InvalidCursor:
            return self.render("error.html", None, request, status=400, message="That page's cursor is unknown.",
                               code=400)

    # -- rendering ---------------------------------------------------------------------------------------------

    async def render_off_loop(self, template: str, viewer: Viewer, request: web.Request,
                              **values: Any) -> web.Response:
        """:meth:`render` in a worker thread: a page of many items or rows is not built on the event loop."""
        return await asyncio.to_thread(self.render, template, viewer, request, **values)

    def render(self, template: str, viewer: Viewer | None, request: web.Request, *, status: int = 200,
               **values: Any) -> web.Response:
        tenant = viewer.scope(request) if viewer is not None else ""
        body = self.templates.get_template(template).render(
            viewer=viewer, tenant=tenant, chosen_tenant=request.query.get("tenant", "") if viewer else "",
            path=request.path, link=linker(viewer, tenant), money=money, ms=milliseconds, **values)
        response = web.Response(text=body, status=status, content_type="text/html", charset="utf-8")
        response.headers.update(HEADERS)
        return response

    def static(self, name: str) -> web.Response:
        if name not in STATIC:
            raise APIError(404, "No such file.", code="not_found")
        response = web.Response(body=(HERE / "static" / name).read_bytes(), content_type=STATIC[name])
        response.headers.update({**HEADERS, "Cache-Control": "max-age=3600"})
        return response

    # -- signing in ------------------------------------------------------------------------------------------

    async def sign_in_page(self, request: web.Request) -> web.StreamResponse:
        refused = ""
        if request.method == "POST":
            check_change(request, None, None)
            form = await posted_form(request)
            cookie = await self.sign_in.sign_in(form.get("key", "")) if self.sign_in.takes_keys else None
            if cookie is not None:
                answer = see_other(return_path(form.get("next")) or "/console/logs")
                self.sign_in.set_cookie(answer, request, cookie)
                return answer
            refused = "That key was not accepted (unknown, revoked or expired)."
            back = return_path(form.get("next"))
        else:
            back = return_path(request.query.get("next"))
            if not self.sign_in.takes_keys and await self.sign_in.viewer(request) is not None:
                return see_other(back or "/console/logs")
        return self.render("sign_in.html", None, request, refused=refused, takes_keys=self.sign_in.takes_keys,
                           back=back or "", status=401 if refused else 200)

    async def sign_out(self, request: web.Request, viewer: Viewer | None) -> web.StreamResponse:
        check_change(request, viewer, (await posted_form(request)).get("csrf"))
        await self.sign_in.sign_out(viewer)  # on the server too: a kept copy of the cookie is refused from now on
        answer = see_other("/console/sign-in")
        self.sign_in.clear_cookie(answer)
        return answer

    # -- logs ------------------------------------------------------------------------------------------------

    async def logs(self, request: web.Request, viewer: Viewer, match: re.Match[str]) -> web.StreamResponse:
        filters = logs.Filters.of(request.query)
        tenant = viewer.scope(request)
        page = await logs.log_page(self.runtime.store.browser, tenant, filters, request.query.get("after") or None,
                                   request.query.get("before") or None, prices=self.prices,
                                   offset=position(request.query.get("offset")))
        tenants = await operations.known_tenants(self.runtime) if viewer.operator else []
        kept = {**filters.query(), **tenant_query(viewer, tenant)}
        unsorted = {name: value for name, value in kept.items() if name != "sort"}
        return await self.render_off_loop(
            "logs.html", viewer, request, page=page, filters=filters, statuses=logs.STATUSES, spans=list(logs.SPANS),
            tenants=tenants, next_query=urlencode({**kept, "after": page.next_after or ""}),
            newer_query=urlencode({**kept, "before": page.newer_before or ""}), export_query=urlencode(kept),
            offset_query=lambda offset: urlencode({**kept, "offset": str(offset)}),
            sort_query={name: urlencode({**unsorted, **({"sort": name} if name else {})})
                        for name in ("", "latency", "ttft")},
            counted=logs.COUNTED, priced=bool(self.prices))

    async def logs_csv(self, request: web.Request, viewer: Viewer, match: re.Match[str]) -> web.StreamResponse:
        return await exports.logs_csv(request, self.runtime.store.browser, viewer.scope(request),
                                      logs.Filters.of(request.query), self.prices, HEADERS)

    async def response_live(self, request: web.Request, viewer: Viewer,
                            match: re.Match[str]) -> web.StreamResponse:
        return await live.follow(request, self.runtime.background, match["id"], viewer.scope(request), HEADERS)

    async def response_raw(self, request: web.Request, viewer: Viewer, match: re.Match[str]) -> web.StreamResponse:
        stored = await self.runtime.store.browser.response_json(match["id"], tenant=viewer.scope(request))
        if stored is None:
            raise APIError(404, "No stored response with that id.", code="not_found")
        shown = await asyncio.to_thread(raw.shown, stored)
        del stored
        return await self.render_off_loop("raw.html", viewer, request, shown=shown, object_id=match["id"],
                                          back=linker(viewer, viewer.scope(request))(f"/console/logs/{match['id']}"))

    async def response(self, request: web.Request, viewer: Viewer, match: re.Match[str]) -> web.StreamResponse:
        tenant, response_id = viewer.scope(request), match["id"]
        starts = {kind: position(request.query.get(kind)) for kind in detail.KINDS}
        shown = await detail.response_detail(self.runtime.store.browser, tenant, response_id, self._upstream,
                                             starts, self.prices)
        if shown is None:
            raise APIError(404, "No stored response with that id.", code="not_found")
        link = linker(viewer, tenant)
        item_pages: dict[str, list[tuple[str, str]]] = {}
        for kind, other, items in (("input", "output", shown.inputs), ("output", "input", shown.outputs)):
            keep = {other: str(starts[other])} if starts[other] else {}
            item_pages[kind] = ([("first", link(f"/console/logs/{response_id}", **keep))] if items.start else []) + (
                [("more", link(f"/console/logs/{response_id}", **keep, **{kind: str(items.next_start)}))]
                if items.next_start is not None else [])
        facts = dict(shown.facts)
        running = facts.get("status") in ("queued", "in_progress") and facts.get("background") == "True"
        timed = await trace.response_trace(self.runtime.store.browser, tenant, response_id, link)
        return await self.render_off_loop("response.html", viewer, request, detail=shown, response_id=response_id,
                                          item_pages=item_pages, trace=timed,
                                          live=link(f"/console/logs/{response_id}/live") if running else "")

    async def trace_span(self, request: web.Request, viewer: Viewer, match: re.Match[str]) -> web.StreamResponse:
        """One span of a response's trace: its attributes, its input and output."""
        shown = await trace.span_page(self.runtime.store.browser, viewer.scope(request), match["id"],
                                      int(match["span"]))
        if shown is None:
            raise APIError(404, "No such span in that response's trace.", code="not_found")
        return await self.render_off_loop("span.html", viewer, request, span=shown, response_id=match["id"])

    async def response_item(self, request: web.Request, viewer: Viewer,
                            match: re.Match[str]) -> web.StreamResponse:
        shown = await detail.one_item(self.runtime.store.browser, viewer.scope(request), match["id"], match["kind"],
                                      int(match["position"]))
        if shown is None:
            raise APIError(404, "No stored item there.", code="not_found")
        return await self.render_off_loop("item.html", viewer, request, shown=shown, response_id=match["id"],
                                          kind=match["kind"])

    def _upstream(self, model: str) -> str | None:
        """The upstream a model's requests go to, said when there is more than one."""
        if len(self.runtime.router.upstreams) <= 1:
            return None
        try:
            return self.runtime.route(model or None).upstream.name
        except APIError:
            return None

    async def chat_list(self, request: web.Request, viewer: Viewer, match: re.Match[str]) -> web.StreamResponse:
        model = request.query.get("model", "").strip()[:200]
        text = request.query.get("text", "").strip()[:200]
        page = await chats.chat_page(self.runtime.chat_completions, viewer.scope(request),
                                     request.query.get("after") or None, model, self.runtime.store.browser, text)
        return self.render("chats.html", viewer, request, page=page, model=model, text=text)

    async def chat(self, request: web.Request, viewer: Viewer, match: re.Match[str]) -> web.StreamResponse:
        detail = await chats.chat_detail(self.runtime.chat_completions, viewer.scope(request), match["id"])
        return await self.render_off_loop("chat.html", viewer, request, detail=detail, completion_id=match["id"])

    # -- sessions and traces -----------------------------------------------------------------------------------

    def _sessions(self) -> SessionService:
        if self.sessions is None:
            raise APIError(404, "This server serves no agent sessions.", code="not_found")
        return self.sessions

    async def session_list(self, request: web.Request, viewer: Viewer, match: re.Match[str]) -> web.StreamResponse:
        tenant = viewer.scope(request)
        page = await sessions.session_page(self._sessions(), tenant, request.query.get("after") or None)
        return self.render("sessions.html", viewer, request, page=page)

    async def session(self, request: web.Request, viewer: Viewer, match: re.Match[str]) -> web.StreamResponse:
        tenant, session_id = viewer.scope(request), match["id"]
        detail = await sessions.session_detail(self._sessions(), tenant, session_id)
        live = None
        has = getattr(self.runtime.desktops, "has", None)
        if callable(has) and has(session_id):
            view = self.watch_tokens.mint("view", tenant, session_id)
            page = self.watch_tokens.mint("page", tenant, session_id)
            base = f"/v1/agents/sessions/{session_id}/desktop"
            live = {"frames": f"{base}/frames?token={view}", "calls": f"{base}/calls?token={view}",
                    "page": f"{base}/live?token={page}"}
        return await self.render_off_loop("session.html", viewer, request, detail=detail, session_id=session_id,
                                          live=live)

    async def approve(self, request: web.Request, viewer: Viewer, match: re.Match[str]) -> web.StreamResponse:
        form = await posted_form(request)
        check_change(request, viewer, form.get("csrf"))
        tenant, session_id = viewer.scope(request), match["id"]
        decision, kind = form.get("decision", ""), form.get("kind", "")
        if decision not in sessions.DECISIONS or kind not in sessions.ANSWERABLE:
            raise APIError(400, "Unknown decision.", code="invalid_value")
        event = sessions.approval_event(kind, form.get("request_id", ""), decision, "browser_origin_access")
        await self._sessions().post_events(session_id, {"events": [event]}, idempotency_key=None, tenant=tenant,
                                           authorization=None)
        return see_other(f"/console/sessions/{session_id}{suffix(viewer, tenant)}")

    async def artifact(self, request: web.Request, viewer: Viewer, match: re.Match[str]) -> web.StreamResponse:
        """An artifact's bytes, as the API's ``…/artifacts/{id}/content`` sends them (an attachment, never shown
        as a page)."""
        reader, artifact = await self._sessions().environments.open(match["id"], match["artifact"],
                                                                    tenant=viewer.scope(request))
        return await send_blob(request, reader, str(artifact["path"]).rsplit("/", 1)[-1])

    async def session_traces(self, request: web.Request, viewer: Viewer,
                             match: re.Match[str]) -> web.StreamResponse:
        tenant, session_id = viewer.scope(request), match["id"]
        await self._sessions().get(session_id, tenant=tenant)  # another tenant's: the API's 404
        turns = await self.runtime.agent_store.page("turn", tenant=tenant, parent=session_id, limit=20,
                                                    order="desc")
        link = linker(viewer, tenant)
        timed = [(str(turn.get("id", "")), kept) for turn in turns.data
                 if (kept := trace.turn_trace(turn, link)) is not None]
        # the OpenTelemetry spans kept as well, where the otel extra is installed (services/agents/traces.py)
        falls = await sessions.waterfalls(self.traces, session_id, tenant) if tracing.keeping_available() else []
        return self.render("traces.html", viewer, request, waterfalls=falls, session_id=session_id, turns=timed)

    # -- batches ---------------------------------------------------------------------------------------------------

    async def batch_list(self, request: web.Request, viewer: Viewer, match: re.Match[str]) -> web.StreamResponse:
        page = await batches.batch_page(self.runtime.batch_store, viewer.scope(request),
                                        request.query.get("after") or None)
        return self.render("batches.html", viewer, request, page=page)

    async def batch(self, request: web.Request, viewer: Viewer, match: re.Match[str]) -> web.StreamResponse:
        detail = await batches.batch_detail(self.runtime.batch_store, viewer.scope(request), match["id"])
        return self.render("batch.html", viewer, request, detail=detail, batch_id=match["id"])

    async def batch_file(self, request: web.Request, viewer: Viewer, match: re.Match[str]) -> web.StreamResponse:
        """One of the batch's files, as ``GET /v1/files/{id}/content`` sends it (an attachment, never a page)."""
        tenant = viewer.scope(request)
        file_id = await batches.batch_file(self.runtime.batch_store, tenant, match["id"], match["file"])
        reader, found = await self.runtime.files.open_content(file_id, tenant=tenant)
        return await send_blob(request, reader, str(found.get("filename") or f"{file_id}.jsonl"))

    # -- usage and operations ----------------------------------------------------------------------------------

    async def usage(self, request: web.Request, viewer: Viewer, match: re.Match[str]) -> web.StreamResponse:
        shown = await self._usage(request, viewer)
        return self.render("usage.html", viewer, request, usage=shown, windows=list(usage.WINDOWS),
                           export_query=urlencode({name: request.query[name] for name in ("window", "tenant")
                                                   if request.query.get(name)}))

    async def usage_csv(self, request: web.Request, viewer: Viewer, match: re.Match[str]) -> web.StreamResponse:
        return await exports.usage_csv(request, await self._usage(request, viewer), HEADERS)

    async def _usage(self, request: web.Request, viewer: Viewer) -> Usage:
        window = request.query.get("window", "24h")
        if viewer.operator and not request.query.get("tenant"):  # every tenant; ``*`` is a name, never a wildcard
            tenants, by_tenant = await operations.known_tenants(self.runtime), True
        else:
            tenants, by_tenant = [viewer.scope(request)], False
        return await usage.usage(self.runtime.store, tenants, window, by_tenant=by_tenant, prices=self.prices)

    async def operations(self, request: web.Request, viewer: Viewer, match: re.Match[str]) -> web.StreamResponse:
        made = request.query.get("made", "")
        return self.render("operations.html", viewer, request, snapshot=await operations.snapshot(self.runtime),
                           made=made, takes_keys=self.runtime.api_keys is not None)

    async def create_key(self, request: web.Request, viewer: Viewer, match: re.Match[str]) -> web.StreamResponse:
        form = await posted_form(request)
        check_change(request, viewer, form.get("csrf"))
        tenant = form.get("tenant", "").strip()
        if not tenant or self.runtime.api_keys is None:
            raise APIError(400, "Name the tenant the key is for.", code="invalid_value")
        problem = tenant_name_problem(tenant)  # as `keys create --tenant` (never cut short: refused whole)
        if problem is not None:
            raise APIError(400, problem[0].upper() + problem[1:] + ".", param="tenant", code="invalid_tenant")
        text, key = await self.runtime.api_keys.create_key(tenant, operator=form.get("operator") == "on")
        # the one page that shows a key: the answer to making it, once, never stored, never cached
        return self.render("key_made.html", viewer, request, key_text=text, key=key)

    async def revoke_key(self, request: web.Request, viewer: Viewer, match: re.Match[str]) -> web.StreamResponse:
        form = await posted_form(request)
        check_change(request, viewer, form.get("csrf"))
        if self.runtime.api_keys is None:
            raise APIError(404, "No key with that id.", code="not_found")
        async with self.revoking:  # one check-and-revoke at a time: two operators cannot revoke the last two keys
            await operations.check_revocable(self.runtime.api_keys, match["id"], viewer.key_id)
            if not await self.runtime.api_keys.revoke_key(match["id"]):
                raise APIError(404, "No key with that id.", code="not_found")
        return see_other("/console/operations")
