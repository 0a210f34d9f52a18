"""The desktop's approvals in a session: what a computer call left the browser waiting for — an origin not yet
approved (the egress proxy holds its request: sandbox/desktop/origins.py), a sign-in form (sign_in.py) — asked of
the client as ``computer_use_approval_request`` required actions (a sign-in form also as the session's item of that
type, and the client's answer to it as a ``computer_use_approval_request_result`` item: the SDK's session items
have those two, for sign-in only), and the client's answers done on the desktop.

The machinery is the MCP approvals' (tool_calls.py, session_waiting.py): each request is held in the turn's
``ToolCalls.approvals``, so the session ``requires_action`` and the wait is kept in the turn's record, across a
restart, as every wait is. The call's answer (its ``computer_call_output``) waits too: the model is given the
screenshot taken once every request of the call was answered and done, and a line saying what the client
decided — never what it submitted. A page the approval let load may ask again (another origin, a sign-in form):
those are asked of the same call, and the model hears of the call once nothing of it awaits the client.

A submission the desktop refused (page.py: the form's document, or where it posts, is not the credential origin;
nothing was sent there) is told to the model (what it is told says why, never a value) and to the client: each
submission the desktop did is a ``computer_use_call`` item of the session (``completed``, or ``failed`` with the
reason in its ``title``), with the screenshot after it where the agent's tool includes them.

Submitted sign-in values reach this module in memory (``ToolCalls.secrets``), go to the desktop once
(``Desktop.submit_sign_in``) and are cleared; nothing here stores, logs or repeats them. A process that stopped
between the client's answer and the desktop's doing of it has no values (they were never stored) and no
desktop (it stopped with the process): the model is told the form was not submitted, on a fresh desktop.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from .... import ids
from ....protocol.agents.computer_approvals import ORIGIN, origin_request, request_item
from ....protocol.errors import APIError
from ....sandbox.desktop import DesktopUnavailable, Screenshot, parse_actions
from ..session_waiting import keep_wait
from ..turn_queue import public
from .desktops import DesktopBusy, DesktopPool

if TYPE_CHECKING:
    from ..runner_view import TurnRunner
    from ..turn_queue import QueuedTurn

log = structlog.get_logger("responses_bridge.agents")


class ComputerUse(Protocol):
    """What the answers' doing uses of the sessions' computer use (calls.py's ``ComputerUse``, which asks here: a
    Protocol, so this module does not import it back)."""

    desktops: DesktopPool

    async def network(self, session: dict[str, Any], tenant: str) -> Any: ...

    def fresh_line(self, why: str | None) -> str: ...

    def include_screenshots(self, session: dict[str, Any]) -> bool: ...

    def answer(self, entry: QueuedTurn, call_id: str, shot: Screenshot | None, note: str | None,
               failed: bool) -> None: ...

SAID = {
    "approve": "The user approved the browser's access to {origin}: its held request went on.",
    "deny": "The user denied the browser's access to {origin}: it is never reached from this desktop.",
    "cancel": ("The user dismissed the request for {origin} without deciding: the browser's request was refused, "
               "and it is asked again if the browser requests it again."),
    "submit": ("The user signed in on the page's form{at}: the bridge entered the values and submitted the form "
               "(the values are not shown to you)."),
    "cancelled": "The user cancelled the sign-in on the page's form{at}: it was left as it was.",
    "refused": ("The user signed in on the page's form{at}, but the bridge refused to submit it: {why}. No value "
                "was sent anywhere else (the values are not shown to you)."),
}
TITLE_CHARS = 200


def seen_besides(shot: Screenshot) -> list[str]:
    """What the model is told besides its screenshot: the browser started again, and what the egress proxy
    refused since its last call."""
    lines = [f"The browser had gone: {shot.browser}"] if shot.browser else []
    if shot.refused:
        lines.append("The browser's network refused: " + "; ".join(shot.refused) + ". A page may show the refusal "
                     "(egress proxy) or lack what was refused.")
    return lines


def wants_approval(shot: Screenshot) -> bool:
    """The call's actions left the browser waiting for the client: an origin, or a sign-in form shown."""
    return bool(shot.pending_origins or shot.sign_in is not None)


async def ask(runner: TurnRunner, entry: QueuedTurn, call_id: str, shot: Screenshot, said: list[str]) -> None:
    """Hold the turn for what ``shot`` waits on: one request per origin, one for the sign-in form
    (the session's required actions, told when the turn waits); the form's also a ``computer_use_approval_request``
    item, stored with the event that tells it (the SDK's items have no origin request). ``said``: what the model
    is to be told with the call's answer so far."""
    made = [origin_request(origin) for origin in shot.pending_origins]  # each call asks its own: it is answered
    if shot.sign_in is not None:
        made.append(shot.sign_in.request())
    for request in made:
        held = {"id": ids.new_id("cuareq"), "turn_id": entry.turn["id"], "request": request,
                "computer": {"call_id": call_id, "said": said}}
        entry.calls.asked(held)
        if request["type"] == ORIGIN:  # the SDK's session items have none for an origin: a required action only
            continue
        item = request_item(ids.new_id("cuaitem"), held)
        await runner.events.emit({"type": "agent.session.turn.item.added", "session_id": runner.session_id,
                                  "turn_id": entry.turn["id"], "output_index": None, "item": item},
                                 records=[runner.item_record(item)])


async def resolve(use: ComputerUse, runner: TurnRunner, entry: QueuedTurn) -> None:
    """The answered requests of one computer call (``ToolCalls.ready``) done on the session's desktop; then the
    screen once settled: asked again when it waits on the client anew, else the call's answer for the model."""
    calls = entry.calls
    group = calls.ready()
    for request in group:
        calls.decided.remove(request)
    call_id = str(group[0]["computer"]["call_id"])
    said = list(group[0]["computer"].get("said") or [])
    secrets = {str(request["id"]): calls.secrets.pop(str(request["id"]), None) for request in group}
    session_id, tenant = runner.session_id, runner.tenant
    origins = [request for request in group if request["request"]["type"] == ORIGIN]
    forms = [request for request in group if request["request"]["type"] != ORIGIN]
    for request in origins:  # a fresh desktop (after a restart) starts with them approved
        if request["answer"]["decision"] == "approve":
            use.desktops.approve(session_id, request["request"]["origin"])
    shot: Screenshot | None = None
    done: list[tuple[str, str, Screenshot]] = []  # each submission the desktop did: its status, what it was
    why = use.desktops.stopped.get(session_id)  # the earlier desktop's end, if it stopped in this process
    try:
        network = await use.network(await runner.session(), tenant)
        holder = use.desktops.holder(tenant, entry.authorization)
        async with use.desktops.use(session_id, tenant, network, holder) as (desktop, fresh):
            if fresh:
                said.append(use.fresh_line(why))
            for request in origins:
                origin, decision = request["request"]["origin"], request["answer"]["decision"]
                if not fresh:
                    try:
                        {"approve": desktop.allow_origin, "deny": desktop.deny_origin,
                         "cancel": desktop.dismiss_origin}[decision](origin)
                    except APIError as error:  # the desktop remembers at most so many origins
                        said.append(f"The decision on {origin} could not be applied: {error.message}")
                        continue
                said.append(SAID[decision].format(origin=origin))
            for request in forms:
                values, at = secrets.get(str(request["id"])), request["request"].get("credential_origin")
                where = f" ({at})" if at else ""
                if request["answer"]["action"] != "submit":
                    if not fresh:
                        desktop.cancel_sign_in()
                    said.append(SAID["cancelled"].format(at=where))
                elif values is None or fresh:
                    said.append(f"The user signed in on the page's form{where}, but the desktop that showed it "
                                "stopped before the values were entered: nothing was submitted.")
                else:
                    try:
                        shot = await desktop.submit_sign_in(values, request["answer"].get("selected_option"))
                        if shot.error is None:
                            said.append(SAID["submit"].format(at=where))
                            done.append(("completed", f"sign-in submitted to {at}", shot))
                        else:
                            said.append(SAID["refused"].format(at=where, why=shot.error))
                            done.append(("failed", f"sign-in not submitted: {shot.error}", shot))
                        said += seen_besides(shot)
                    except APIError as error:  # the form is gone, or no longer fits: never a value in it
                        said.append(f"The sign-in on the page's form{where} was not submitted: {error.message}")
                    finally:
                        values.clear()
            if shot is None or origins:  # a page let through is given a moment to load before it is shown
                wait = parse_actions([{"type": "wait"}] if any(request["answer"]["decision"] == "approve"
                                                               for request in origins) else [],
                                     desktop.width, desktop.height)
                shot = await desktop.act(wait)
                said += seen_besides(shot)
    except DesktopBusy as busy:
        said.append(str(busy))
    except DesktopUnavailable as error:
        await use.desktops.stop(session_id, "failed")
        log.warning("desktop_unavailable", session_id=session_id, tenant=tenant, error=str(error))
        said.append(f"The desktop is not available: {error}")
    said = [line for line in said if line]
    if done:
        await _told(use, runner, entry, done)
    if shot is not None and wants_approval(shot):
        await ask(runner, entry, call_id, shot, said)
        await _asked_again(runner, entry)
        return
    use.answer(entry, call_id, shot, " ".join(said) or None, failed=shot is None)
    keep_wait(entry)
    await runner.events.flush([runner.turn_record(entry.turn)])


async def _told(use: ComputerUse, runner: TurnRunner, entry: QueuedTurn,
                done: list[tuple[str, str, Screenshot]]) -> None:
    """Each sign-in submission the desktop did, as the session's ``computer_use_call`` item: the client sees
    whether it went, and why not."""
    include = use.include_screenshots(await runner.session())
    for status, title, shot in done:
        item: dict[str, Any] = {"id": ids.new_id("cu"), "type": "computer_use_call", "status": status,
                                "title": title[:TITLE_CHARS], "output": None, "turn_id": entry.turn["id"]}
        base = {"session_id": runner.session_id, "turn_id": entry.turn["id"], "output_index": 0}
        await runner.events.emit({"type": "agent.session.turn.item.added", **base,
                                  "item": dict(item, status="in_progress")})
        if include:
            item["output"] = {"type": "computer_screenshot",
                              "image_url": "data:image/jpeg;base64," + base64.b64encode(shot.jpeg).decode()}
        await runner.events.emit({"type": "agent.session.turn.item.done", **base, "item": item},
                                 records=[runner.item_record(item)])


async def _asked_again(runner: TurnRunner, entry: QueuedTurn) -> None:
    """The session's required actions now, told again (``agent.session.requires_action``), with the wait."""
    keep_wait(entry)
    async with runner._changing() as session:
        session["status"], session["required_actions"] = "requires_action", entry.calls.required_actions()
        await runner.events.emit({"type": "agent.session.requires_action", "session": public(session)},
                                 records=[runner.turn_record(entry.turn), runner.session_record(session)])
