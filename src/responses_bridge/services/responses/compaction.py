"""``POST /v1/responses/compact``: the older part of a conversation, summarised by the upstream model and sealed.

The conversation is the request's ``input`` after the history of ``previous_response_id`` (either may be absent,
not both). The most recent user message(s) stay as plain items; everything else is summarised by one Chat
Completions call (non-streamed, through the sidecar's upstream client) and sealed with the deployment's key
(purpose ``"compaction"``), so only this deployment can open it. The answer::

    {"id": "cmp_…", "object": "response.compaction", "created_at": …,
     "output": [<kept user messages…>, {"type": "compaction", "id": "cmp_…", "encrypted_content": "rb1.…"}],
     "usage": {…the summarising call's usage…}}

Sending the output back as input (with new items after it) gives the model the kept messages and the summary
(see :mod:`responses_bridge.engine.responses.compaction`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from ... import ids
from ...engine.options import EngineOptions
from ...engine.responses import compaction
from ...engine.responses.response_object import convert_usage
from ...fairness.memory_charge import reserve_references
from ...protocol.errors import APIError, invalid_request, not_found
from ...protocol.responses.item_references import resolve_stored
from ...protocol.responses.request import parse_json_object, parse_request_object
from ...protocol.tools.call_outputs import pair_call_outputs
from ...run.file_inputs import FileLoader, FileResolution, names_files
from ...run.upstream import UpstreamClient, UpstreamFailure
from ...sealing import Sealer
from ...store.base import ResponseStore

ZERO_USAGE = {"input_tokens": 0, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
              "output_tokens": 0, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 0}


def split_kept(items: list[dict[str, Any]],
               keepable: Callable[[dict[str, Any]], bool] = lambda item: True) -> tuple[list[int], list[int]]:
    """Indices of the items kept plain (the user messages after the last non-user item, or else the last user
    message) and of those summarised (all others), each in order. ``keepable``: False for items that may only be
    summarised (an earlier compaction's summary and kept items, which are user messages too)."""
    def plain_user(item: dict[str, Any]) -> bool:
        return _is_user_message(item) and keepable(item)

    last_other = max((i for i, item in enumerate(items) if not plain_user(item)), default=-1)
    kept = [i for i in range(last_other + 1, len(items)) if plain_user(items[i])]
    if not kept:
        users = [i for i, item in enumerate(items) if plain_user(item)]
        kept = users[-1:]
    kept_set = set(kept)
    return kept, [i for i in range(len(items)) if i not in kept_set]


def _is_user_message(item: dict[str, Any]) -> bool:
    return item.get("type") == "message" and item.get("role") == "user"


class CompactionService:
    def __init__(self, store: ResponseStore, sealer: Sealer, upstream: UpstreamClient,
                 options: EngineOptions, files: FileLoader | None = None) -> None:
        self.files = files  # the tenant's files, for parts naming one (None: such parts are a 400)
        self.store = store
        self.sealer = sealer
        self.upstream = upstream
        self.options = options

    async def compact(self, body: bytes, authorization: str | None, *, tenant: str) -> dict[str, Any]:
        raw = parse_json_object(body)
        for key in ("stream", "background", "store", "conversation", "prompt"):
            raw.pop(key, None)
        request = parse_request_object(raw, max_input_items=self.options.max_input_items,  # 400 without 'model'
                                       unknown_fields=self.options.unknown_fields)
        model = request.model
        items: list[dict[str, Any]] = []
        previous = request.params.previous_response_id
        if previous is not None:
            loaded = await self.store.load_history(previous, tenant=tenant)
            if loaded is None:
                raise not_found(f"Previous response with id '{previous}' not found.", param="previous_response_id",
                                code="previous_response_not_found")
            items = loaded
        # references become the items they name (any the tenant stored), outputs without call_id their call's (as
        # for a create)
        inputs = await resolve_stored(items, request.input_items, self.store, tenant=tenant,
                                      reserve=reserve_references)
        pair_call_outputs(items, inputs)
        items = items + inputs
        if not items:
            raise invalid_request("Nothing to compact: send 'input' and/or 'previous_response_id'.", param="input",
                                  code="missing_required_parameter")
        # an earlier compaction is summarised again (an automatic one with what it kept, and nothing before it)
        expanded, _ = compaction.expand(items, self.sealer)
        originals = {id(item) for item in items}
        kept, older = split_kept(expanded, lambda item: id(item) in originals)
        summary, usage = "", dict(ZERO_USAGE)
        if older:
            summarised = [expanded[i] for i in older]
            files = FileResolution(self.files, self.options, tenant) if self.files and names_files(summarised) \
                else None
            try:  # the summary reads the files' content; what is kept keeps the parts as sent
                if files is not None:
                    summarised = await files.resolve(summarised, "input")
                summary, usage = await self._summarise(summarised, model, authorization)
            finally:
                if files is not None:
                    files.release()
        blob = compaction.seal_summary(self.sealer, summary, model, len(older))
        output = [expanded[i] for i in kept]
        output.append({"type": "compaction", "id": ids.new_id("cmp"), "encrypted_content": blob})
        return {"id": ids.new_id("cmp"), "object": "response.compaction", "created_at": int(time.time()),
                "output": output, "usage": usage}

    async def _summarise(self, items: list[dict[str, Any]], model: str,
                         authorization: str | None) -> tuple[str, dict[str, Any]]:
        chat = compaction.summary_request(items, model, self.options)
        try:
            async with self.upstream.post_json("chat/completions", orjson.dumps(chat), authorization) as answer:
                status, payload = answer.status, await self.upstream.read_answer(answer)
        except UpstreamFailure as failure:
            raise failure.error from None
        try:
            completion = orjson.loads(payload) if payload else None
        except orjson.JSONDecodeError:
            completion = None
        if status >= 400 or not isinstance(completion, dict):
            message = None
            if isinstance(completion, dict) and isinstance(completion.get("error"), dict):
                message = completion["error"].get("message")
            message = message or f"HTTP {status}"
            if status < 500 and status >= 400:
                raise APIError(status, f"The upstream refused the compaction request: {message}",
                               code="upstream_error")
            raise APIError(502, f"The upstream model server failed to summarise: {message}", type="server_error",
                           code="server_error")
        try:
            text = completion["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise APIError(502, "The upstream's summary answer has no message content.", type="server_error",
                           code="server_error") from None
        if not isinstance(text, str):
            text = str(text)
        return text.strip(), convert_usage(completion.get("usage")) or dict(ZERO_USAGE)
