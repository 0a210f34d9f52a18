"""A session turn's multi-agent tree told as the Agents API's subagents.

A session whose agent has ``multi_agent.enabled`` runs each turn's response with the bridge's own tree of subagents
(run/multi_agent.py, the same as ``POST /v1/responses?beta=true``): the root model's ``multi_agent_call`` items
spawn, message, await and interrupt subagents, each piece of a subagent's work is a response of its own, and the
root's output carries what the tree did — the calls and their ``multi_agent_call_output``, the ``agent_message``
items between agents, each subagent's own items tagged with its ``agent`` once the root collects them. The turn loop
learns nothing about sessions; this module reads that output as it streams and says it in the session's words:

- a ``spawn_agent`` call is a ``create_subagent_call`` item of the root's turn; once spawned, the subagent is a
  record of the session (``agent.session.subagent.created``) and its task the first of its turns (``Turn`` with
  ``subagent_id``: ``agent.session.turn.created`` / ``.in_progress``);
- ``send_message`` and ``followup_task`` are ``send_subagent_input_call`` items (a follow-up starts another turn),
  ``wait_agent`` a ``wait_for_subagents_call``, ``interrupt_agent`` an ``interrupt_subagent_call``; ``list_agents``
  only reads the tree and shows no item;
- a subagent's own items are items of its turn, which ends (``agent.session.turn.completed`` / ``.failed`` /
  ``.cancelled``) where the root collects its result; an ``agent_message`` is the SDK's item of that name (told by
  ``item.added`` alone, whole, as the SDK's types have it);
- the tree lives as long as the response: when it ends, a turn never collected is ``cancelled`` and every
  subagent it opened is closed (``agent.session.subagent.closed``), kept with its context
  (contexts.py); the next turn's tree starts with the session's kept subagents, closed:
  ``followup_task`` on one is a ``resume_subagent_call`` (and ``agent.session.subagent.active``) before its
  ``send_subagent_input_call``, and ``interrupt_agent`` with ``close`` a ``close_subagent_call`` (and
  ``agent.session.subagent.closed``) — the SDK's ``multi_agent_call`` has no action of its own for either.

Nothing here does I/O: each step returns the events to tell and the records they store (turns.py).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from .... import ids
from ....engine.tools.multi_agent import ROOT_AGENT
from ....protocol.agents.events import CLIENT_CALL, Shown, translate, turn_error
from ....run.multi_agent import CLOSED, RESUMED
from ....store.base_agents import Record
from .contexts import context_of, shown
from .contexts import record as kept_record

Told = tuple[dict[str, Any], list[Record]]
"""A session event and the records stored with it."""

TREE_KINDS = frozenset({"multi_agent_call", "multi_agent_call_output", "agent_message"})
_SPAWNED = re.compile(r"^Spawned (\S+)\.$")  # run/multi_agent.py: AgentTree._spawn's answer
_RESULT = re.compile(r"^## (\S+) \((\w+)\)$", re.MULTILINE)  # run/multi_agent.py: each result of AgentTree._wait
_TURN_STATUS = {"completed": "completed", "interrupted": "cancelled", "cancelled": "cancelled"}
_CALL_TYPES = {"spawn_agent": "create_subagent_call", "send_message": "send_subagent_input_call",
               "followup_task": "send_subagent_input_call", "wait_agent": "wait_for_subagents_call",
               "interrupt_agent": "interrupt_subagent_call"}


@dataclass
class _Subagent:
    record: dict[str, Any]
    turn: dict[str, Any] | None = None  # its turn in progress
    shown: Shown = field(default_factory=Shown)
    said: str = ""  # its latest answer to the root (a failed turn's error)
    context: list[dict[str, Any]] = field(default_factory=list)  # as run/multi_agent.py's tree keeps it
    piece: list[dict[str, Any]] = field(default_factory=list)  # its piece of work in progress: task, own items
    inbox: list[str] = field(default_factory=list)  # messages it reads with its next task


def _text(parts: Any) -> str:
    return "".join(str(part.get("text", "")) for part in parts or () if isinstance(part, dict))


def _arguments(item: dict[str, Any]) -> dict[str, Any]:
    try:
        parsed = orjson.loads(item.get("arguments") or "{}")
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


class SubagentTree:
    """The subagents of one response of a session's turn (``turn_id``, the root's), as the session tells them."""

    def __init__(self, session: dict[str, Any], turn_id: str, kept: list[dict[str, Any]] | None = None) -> None:
        agent = session["agent"]
        self.session_id: str = session["id"]
        self.root_id: str = agent["id"]
        self.model: str | None = agent.get("model")
        self.effort: str | None = (agent.get("reasoning") or {}).get("effort")
        self.cache = session.get("prompt_cache_options")
        self.turn_id = turn_id
        self.subagents: dict[str, _Subagent] = {}  # by the tree's name for it
        self.calls: dict[str, tuple[str, dict[str, Any] | None, dict[str, Any]]] = {}  # call_id: action, item, args
        self.resuming: dict[str, dict[str, Any]] = {}  # call_id of a followup_task: its resume_subagent_call
        for kept_one in reversed(kept or []):  # the session's closed subagents (contexts.py)
            self.subagents[kept_one["name"]] = _Subagent(shown(kept_one), context=list(context_of(kept_one) or []))

    # --- records --------------------------------------------------------------------------------------------

    def _item_record(self, item: dict[str, Any]) -> Record:
        return Record("item", str(item["id"]), item, parent=self.session_id, scope=self.turn_id)

    def _base(self, turn_id: str | None = None) -> dict[str, Any]:
        return {"session_id": self.session_id, "turn_id": turn_id or self.turn_id}

    def _id_of(self, name: Any) -> str:
        """The session's id of the subagent the tree calls ``name`` (the root is the session's agent); a name the
        tree does not know stays as it was written (the SDK's fields take an id or a name)."""
        name = str(name or "")[:200]
        if name == ROOT_AGENT:
            return self.root_id
        known = self.subagents.get(name)
        return known.record["id"] if known is not None else name

    # --- the response's items -------------------------------------------------------------------------------

    def take(self, event: dict[str, Any]) -> list[Told] | None:
        """What ``event`` of the root's stream says of the tree; None when it is not the tree's (the root's own
        items and text, told as any turn's)."""
        kind = event.get("type")
        if kind not in ("response.output_item.added", "response.output_item.done"):
            return None
        item = event.get("item") or {}
        author = (item.get("agent") or {}).get("agent_name")
        if item.get("type") not in TREE_KINDS and author in (None, ROOT_AGENT):
            return None
        if item.get("type") not in TREE_KINDS:
            return self._subagent_item(event, str(author))
        if kind != "response.output_item.done":
            return []  # told whole once done: a call's arguments are complete then
        if item["type"] == "multi_agent_call":
            return self._call(item, event.get("output_index", 0))
        if item["type"] == "multi_agent_call_output":
            return self._call_output(item, event.get("output_index", 0))
        return self._message(item, event.get("output_index", 0))

    def _call(self, item: dict[str, Any], index: int) -> list[Told]:
        action, args = str(item.get("action")), _arguments(item)
        kind = _CALL_TYPES.get(action)
        if kind is None:  # list_agents reads the tree: no item of the session's says it
            self.calls[str(item.get("call_id"))] = (action, None, args)
            return []
        if action == "interrupt_agent" and args.get("close") is True:
            kind = "close_subagent_call"
        told: list[Told] = []
        target = self.subagents.get(str(args.get("agent_name")))
        if action == "followup_task" and target is not None and target.record["status"] == "closed":
            resume = {"id": ids.new_id("rsc"), "type": "resume_subagent_call", "status": "in_progress",
                      "sender_agent_id": self.root_id, "recipient_agent_id": target.record["id"],
                      "turn_id": self.turn_id}
            self.resuming[str(item.get("call_id"))] = resume
            told.append(({"type": "agent.session.turn.item.added", **self._base(), "output_index": index,
                          "item": dict(resume)}, []))
        shown: dict[str, Any] = {"id": item.get("id"), "type": kind, "status": "in_progress",
                                 "turn_id": self.turn_id}
        if kind == "create_subagent_call":
            shown.update(agent_id=self.root_id, content=[{"type": "output_text", "text": str(args.get("task") or "")}],
                         model=self.model, reasoning_effort=self.effort)
        elif kind == "wait_for_subagents_call":
            named = args.get("agent_names")
            shown.update(sender_agent_id=self.root_id,
                         recipient_agent_ids=[self._id_of(name) for name in named] if isinstance(named, list) else [])
        else:
            shown.update(sender_agent_id=self.root_id, recipient_agent_id=self._id_of(args.get("agent_name")))
            if kind == "send_subagent_input_call":
                text = args.get("message") if action == "send_message" else args.get("task")
                shown["content"] = [{"type": "output_text", "text": str(text or "")}]
        self.calls[str(item.get("call_id"))] = (action, shown, args)
        return [*told, ({"type": "agent.session.turn.item.added", **self._base(), "output_index": index,
                         "item": dict(shown)}, [])]

    def _call_output(self, item: dict[str, Any], index: int) -> list[Told]:
        action, shown, args = self.calls.pop(str(item.get("call_id")), ("", None, {}))
        text = _text(item.get("output"))
        failed = text.startswith("Error:")
        told: list[Told] = []
        subagent = self.subagents.get(str(args.get("agent_name")))
        resume = self.resuming.pop(str(item.get("call_id")), None)
        if resume is not None:
            told += self._resumed(resume, subagent, index, RESUMED in text and not failed)
        if action == "spawn_agent" and (spawned := _SPAWNED.match(text)):
            told += self._open(spawned.group(1), str(args.get("task") or ""))
        elif action == "followup_task" and not failed:
            if subagent is not None:
                task = "\n\n".join([*(f"Message: {message}" for message in subagent.inbox),
                                     str(args.get("task") or "")])
                subagent.inbox.clear()
                told += self._start(subagent, task)
        elif action == "send_message" and not failed and subagent is not None:
            subagent.inbox.append(str(args.get("message") or ""))
        elif action == "interrupt_agent" and CLOSED in text and not failed and subagent is not None:
            told += self._close(subagent)
        elif action == "wait_agent" and not failed:
            results = _RESULT.findall(text)
            for name, status in results:
                subagent = self.subagents.get(name)
                if subagent is not None and subagent.turn is not None:
                    told += self._end(subagent, status)
            if shown is not None:
                shown["recipient_agent_ids"] = [self._id_of(name) for name, _ in results]
        if shown is not None:
            done = dict(shown, status="failed" if failed else "completed")
            told.append(({"type": "agent.session.turn.item.done", **self._base(), "output_index": index,
                          "item": done}, [self._item_record(done)]))
        return told

    def _message(self, item: dict[str, Any], index: int) -> list[Told]:
        author = str(item.get("author") or "")
        text = _text(item.get("content"))
        if author in self.subagents:
            self.subagents[author].said = text
        shown = {"id": item.get("id"), "type": "agent_message", "content": [{"type": "output_text", "text": text}],
                 "sender_agent_id": self._id_of(author), "recipient_agent_id": self._id_of(item.get("recipient")),
                 "turn_id": self.turn_id}
        # added only, and whole: the SDK's items of ``item.done`` are what an agent outputs, not what passes between
        # agents (as a client's function_call_output)
        return [({"type": "agent.session.turn.item.added", **self._base(), "output_index": index, "item": shown},
                 [self._item_record(shown)])]

    def _subagent_item(self, event: dict[str, Any], name: str) -> list[Told]:
        """One of a subagent's own items, told in its turn (a call the client would run never is: a subagent's
        response drops those, and its piece of work fails saying so)."""
        subagent = self.subagents.get(name)
        if subagent is None or subagent.turn is None:
            return []
        item = {key: value for key, value in (event.get("item") or {}).items() if key != "agent"}
        turn_id = subagent.turn["id"]
        said, finished = translate({**event, "item": item}, self.session_id, turn_id, subagent.shown)
        if said is None or said["item"].get("type") == "function_call" or CLIENT_CALL in said["item"]:
            return []
        records = [] if finished is None else [
            Record("subagent_item", str(finished["id"]), finished, parent=subagent.record["id"], scope=turn_id)]
        if event.get("type") == "response.output_item.done":
            subagent.piece.append(item)  # its context, as the tree's: the items of its piece of work
        return [(said, records)]

    # --- subagents and their turns --------------------------------------------------------------------------

    def _open(self, name: str, task: str) -> list[Told]:
        sub_id = ids.new_id("subagent")
        record: dict[str, Any] = {"id": sub_id, "object": "agent.session.subagent", "closed_at": None,
                  "instructions": [{"type": "output_text", "text": task}], "name": name, "opened_at": int(time.time()),
                  "parent_agent_id": self.root_id, "session_id": self.session_id, "status": "active"}
        subagent = _Subagent(record)
        self.subagents[name] = subagent
        return [({"type": "agent.session.subagent.created", "subagent": dict(record)},
                 [Record("subagent", sub_id, dict(record), parent=self.session_id)]), *self._start(subagent, task)]

    def _turn_record(self, subagent: _Subagent, turn: dict[str, Any]) -> Record:
        return Record("subagent_turn", turn["id"], dict(turn), parent=subagent.record["id"])

    def _start(self, subagent: _Subagent, task: str) -> list[Told]:
        subagent.piece = [{"type": "message", "role": "user", "content": task}]  # run/multi_agent.py: _start
        now = int(time.time())
        sub_id = subagent.record["id"]
        turn = {"id": ids.new_id("turn"), "object": "agent.session.turn", "agent_id": sub_id,
                "session_id": self.session_id, "created_at": now, "started_at": None, "completed_at": None,
                "status": "queued", "error": None, "subagent_id": sub_id, "usage": None,
                "prompt_cache_options": self.cache}
        created = {"type": "agent.session.turn.created", **self._base(turn["id"]), "turn": dict(turn)}
        turn.update(status="in_progress", started_at=now)
        subagent.turn, subagent.shown = turn, Shown()
        return [(created, []), ({"type": "agent.session.turn.in_progress", **self._base(turn["id"]),
                                 "turn": dict(turn)}, [self._turn_record(subagent, turn)])]

    def _end(self, subagent: _Subagent, status: str) -> list[Told]:
        turn = subagent.turn
        assert turn is not None
        subagent.turn = None
        ended = _TURN_STATUS.get(status, "failed")
        error = turn_error({"message": subagent.said or f"The subagent's work ended {status}."}) \
            if ended == "failed" else None
        if ended != "cancelled":  # the tree's context: the piece's task, and what it made when it completed
            subagent.context += subagent.piece if ended == "completed" else subagent.piece[:1]
        subagent.piece = []
        turn.update(status=ended, error=error, completed_at=int(time.time()))
        return [({"type": f"agent.session.turn.{ended}", **self._base(turn["id"]), "turn": dict(turn),
                  "usage": None}, [self._turn_record(subagent, turn)])]

    def finish(self) -> list[Told]:
        """The response ended, and its tree with it: a turn whose result the root never collected was cancelled
        (run/multi_agent.py: ``AgentTree.close``), and every subagent is closed."""
        told: list[Told] = []
        for subagent in self.subagents.values():
            if subagent.record["status"] != "closed":
                told += self._close(subagent)
        self.subagents.clear()
        return told

    def _close(self, subagent: _Subagent) -> list[Told]:
        """A subagent closed (its turn in progress ``cancelled``), kept with its context."""
        told = self._end(subagent, "cancelled") if subagent.turn is not None else []
        subagent.record.update(status="closed", closed_at=int(time.time()))
        return [*told, ({"type": "agent.session.subagent.closed", "subagent": dict(subagent.record)},
                        [kept_record(subagent.record, self.session_id, subagent.context)])]

    def _resumed(self, resume: dict[str, Any], subagent: _Subagent | None, index: int, done: bool) -> list[Told]:
        """A ``followup_task`` on a closed subagent answered: its ``resume_subagent_call`` done, and when the tree
        resumed it, the subagent active again (``closed_at`` null, ``opened_at`` as it was)."""
        resume["status"] = "completed" if done and subagent is not None else "failed"
        told: list[Told] = [({"type": "agent.session.turn.item.done", **self._base(), "output_index": index,
                              "item": dict(resume)}, [self._item_record(resume)])]
        if resume["status"] == "completed" and subagent is not None:
            subagent.record.update(status="active", closed_at=None)
            told.append(({"type": "agent.session.subagent.active", "subagent": dict(subagent.record)},
                         [kept_record(subagent.record, self.session_id, subagent.context)]))
        return told
