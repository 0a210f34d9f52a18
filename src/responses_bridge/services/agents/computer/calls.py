"""The agent tool ``computer_use`` on a chat backend: the model's ``computer`` calls performed on the session's
desktop (desktops.py), told as ``computer_use_call`` items, answered with the screenshot after the last action.

The turn's response offers the model the GA ``computer`` tool (protocol/agents/inputs.py ``response_tools``): one
function, ``computer``, whose single argument ``actions`` is a list of OpenAI's GA computer actions
(engine/tools/computer.py's JSON schema). Its call ends the response as a ``computer_call`` item (a client tool's
call); the turn's follower (turns.py) hands it here instead of to the client. Here the actions are parsed strictly
(sandbox/desktop/actions.py: coordinates within the screen, known keys), performed in order, and the call is
answered in the turn's next response's input with a ``computer_call_output`` holding the screenshot (a JPEG data
URL), which the engine sends the model as a tool message ("Done; the screenshot follows.") and then a ``user``
message with the image (engine/responses/request_translation.py; only the newest
``RESPONSES_BRIDGE_DESKTOP_SCREENSHOTS_KEPT`` keep their image). What the model must also know is a ``user`` message
after it: a bad action list (the screen left as it was: the model may try again), a desktop that could not be had,
or a fresh desktop where the session had one before (stopped for idleness, yielded to another session while idle, or
lost with a restarted server).

The session sees each call as a ``computer_use_call`` item (the SDK's ``ComputerUseCallItemResource``): added
``in_progress`` when its actions start, done ``completed`` (or ``failed``, the reason told to the model) with
``title`` (what the actions were, shortly) and ``output`` — the screenshot after the last action when the tool's
``include_screenshots``, else null.

What the desktop saw besides is told the same way, the call still ``completed`` (its actions were done): the
browser found gone — its last tab closed, a crash, a kill — and started again at its last address
(``Screenshot.browser``), and each connection the browser's egress proxy refused or cut since the last call, with
why (``Screenshot.refused``: a host the environment does not allow, a bound of the browser's egress passed, a
request head over the proxy's 32 KiB — a URL that long), so a page the proxy kept from loading is never a silent
``completed`` over the proxy's 403.

A call whose actions left the browser waiting for the client — an origin not approved, a sign-in form — is
answered only once the client decided (approvals.py): the session ``requires_action`` meanwhile.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import structlog

from ....protocol.agents.inputs import has_desktop
from ....protocol.errors import APIError
from ....sandbox.desktop import ActionError, DesktopUnavailable, Screenshot, parse_actions
from .approvals import ask, resolve, seen_besides, wants_approval
from .desktops import DesktopBusy, DesktopPool

if TYPE_CHECKING:
    from ...containers.containers import ContainerService
    from ..runner_view import TurnRunner
    from ..turn_queue import QueuedTurn

log = structlog.get_logger("responses_bridge.agents")

BLANK_JPEG = ("data:image/jpeg;base64,/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAFA3PEY8MlBGQUZaVVBfeMiCeG5uePWvuZHI////////"
              "////////////////////////////////////////////wAALCAABAAEBAREA/8QAFAABAAAAAAAAAAAAAAAAAAAAAP/EABQQAQAAAAAAAA"
              "AAAAAAAAAAAAD/2gAIAQEAAD8AP//Z")
"""A one-pixel grey JPEG: the answer's image when no desktop could be had (a ``computer_call_output`` holds one)."""
TITLE_CHARS = 200
FRESH = ("This is a fresh desktop: the session's earlier one was stopped ({why}), and whatever was open on it is "
         "gone. The screenshot shows the screen as it is now.")
WHY = {"idle": "unused for too long", "failed": "it stopped answering",
       "yielded": "it was idle while another session needed a desktop and every desktop that may run was in use"}
WITHHELD = ("The screenshot was not taken: {why}, which a sign-in submitted (a grey image stands in for it). It is "
            "taken again once the page no longer shows it, or the browser has left that site.")
RESTARTED = "the server running it restarted"


def screen_note(width: int, height: int) -> str:
    """What the agent's instructions say of the screen (the GA tool names no display size)."""
    return (f"The computer tool drives a desktop with a web browser (Chromium), a {width}x{height} pixel screen: "
            "coordinates are in the screenshot's pixels. Each call is a list of actions run in order, answered with "
            "a screenshot after the last one; call it with a 'screenshot' action first to see the screen.")


def data_url(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()


def title_of(actions: list[dict[str, Any]]) -> str:
    """A short account of the call's actions: ``click (640, 445); type 'hello'; keypress ENTER``."""
    said = []
    for action in actions:
        kind = str(action.get("type"))
        if kind == "type":
            text = str(action.get("text", ""))
            said.append(f"type {text[:40]!r}" + ("…" if len(text) > 40 else ""))
        elif kind == "keypress":
            said.append("keypress " + "+".join(str(key) for key in action.get("keys") or ()))
        elif "x" in action and "y" in action:
            said.append(f"{kind} ({action['x']}, {action['y']})")
        else:
            said.append(kind)
    title = "; ".join(said)
    return title if len(title) <= TITLE_CHARS else title[:TITLE_CHARS - 1] + "…"


def stopped_call(call: dict[str, Any], turn_id: str) -> dict[str, Any]:
    """The ``computer_use_call`` item of a call whose desktop stopped with the server performing it: failed."""
    return {"id": call["id"], "type": "computer_use_call", "status": "failed",
            "title": title_of(call.get("actions") or []), "output": None, "turn_id": turn_id}


class ComputerUse:
    """Performs a session turn's computer calls on its desktop. ``containers``: where the session's container, and
    so its network policy (the desktop's browser reaches only what it allows), is found."""

    def __init__(self, desktops: DesktopPool, containers: ContainerService | None) -> None:
        self.desktops = desktops
        self.containers = containers

    async def call(self, runner: TurnRunner, entry: QueuedTurn, session: dict[str, Any], call: dict[str, Any],
                   output_index: int = 0) -> None:
        """The model's ``computer_call`` ``call`` (at ``output_index`` of its response) performed; its item told,
        its answer queued for the next response (``entry.calls``)."""
        turn_id = entry.turn["id"]
        actions = call.get("actions") or []
        item: dict[str, Any] = {"id": call["id"], "type": "computer_use_call", "status": "in_progress",
                                "title": title_of(actions), "output": None, "turn_id": turn_id}
        base = {"session_id": runner.session_id, "turn_id": turn_id, "output_index": output_index}
        await runner.events.emit({"type": "agent.session.turn.item.added", **base, "item": dict(item)})
        holder = self.desktops.holder(runner.tenant, entry.authorization)  # whose bound a new desktop counts in
        shot, note, failed = await self._perform(runner, session, call, actions, holder)
        include = self.include_screenshots(session)
        item["status"] = "failed" if failed else "completed"
        if shot is not None and include:
            item["output"] = {"type": "computer_screenshot", "image_url": data_url(shot.jpeg)}
        await runner.events.emit({"type": "agent.session.turn.item.done", **base, "item": item},
                                 records=[runner.item_record(item)])
        if shot is not None and not failed and wants_approval(shot):  # answered once the client decided
            await ask(runner, entry, str(call["call_id"]), shot, [note] if note else [])
            return
        self.answer(entry, str(call["call_id"]), shot, note, failed)

    @staticmethod
    def include_screenshots(session: dict[str, Any]) -> bool:
        """Whether the session's ``computer_use`` tool puts the screenshot in its items."""
        return any(tool["type"] == "computer_use" and tool.get("include_screenshots")
                   for tool in session["agent"]["tools"])

    def answer(self, entry: QueuedTurn, call_id: str, shot: Screenshot | None, note: str | None,
               failed: bool) -> None:
        """The call's answer queued for the next response: the screenshot (a blank one without a desktop), then
        what the model must also know (a screen withheld: why)."""
        if shot is not None and shot.withheld:
            note = " ".join(filter(None, [note, WITHHELD.format(why=shot.withheld)]))
        entry.calls.answers.append({"type": "computer_call_output", "call_id": call_id,
                                    "status": "failed" if failed else "completed",
                                    "output": {"type": "computer_screenshot",
                                               "image_url": data_url(shot.jpeg) if shot else BLANK_JPEG}})
        if note is not None:  # after the screenshot: a user message between tool results would break their pairing
            entry.calls.answers.append({"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": f"(computer call {call_id}) {note}"}]})

    async def resolve(self, runner: TurnRunner, entry: QueuedTurn) -> None:
        """The client's answers to one call's approval requests, done on the desktop (approvals.py)."""
        await resolve(self, runner, entry)

    async def _perform(self, runner: TurnRunner, session: dict[str, Any], call: dict[str, Any],
                       actions: list[dict[str, Any]], holder: str) -> tuple[Screenshot | None, str | None, bool]:
        """The screenshot after the actions (None: no desktop), what the model must be told besides, and whether
        the call failed (its actions not all done). ``holder``: whose bound a new desktop counts in."""
        width, height = self.desktops.settings.width, self.desktops.settings.height
        try:
            if call.get("status") == "incomplete":  # the engine found no action list in the call's arguments
                raise ActionError("the call's arguments were not {\"actions\": [...]} with 1 to 100 computer "
                                  "actions of the function's schema", "actions")
            parsed = parse_actions(actions, width, height)
            problem = None
        except ActionError as error:
            parsed, problem = [], f"{error.message} (at {error.param}); nothing was done."
        session_id, tenant = runner.session_id, runner.tenant
        if not has_desktop(session.get("environment") or {}):  # e.g. a standalone environment taken without one
            return None, "This session's environment has no desktop ('desktop.enabled'): the computer cannot be " \
                "used.", True
        why = self.desktops.stopped.get(session_id)  # the earlier desktop's end, in this process
        try:
            network = await self.network(session, tenant)
            async with self.desktops.use(session_id, tenant, network, holder) as (desktop, fresh):
                note = await self._fresh_note(runner, call, why) if fresh else None
                shot = await desktop.act(parsed) if problem is None else await desktop.screenshot()
        except DesktopBusy as busy:
            return None, str(busy), True
        except DesktopUnavailable as error:
            await self.desktops.stop(session_id, "failed")
            log.warning("desktop_unavailable", session_id=session_id, tenant=tenant, error=str(error))
            return None, f"The desktop is not available: {error}", True
        if shot.browser:
            log.warning("desktop_browser_restarted", session_id=session_id, tenant=tenant, what=shot.browser)
        note = " ".join(filter(None, [note, *seen_besides(shot)])) or None
        if problem is not None:
            return shot, f"Invalid actions: {problem}" + (f" {note}" if note else ""), True
        if shot.error:
            return shot, f"An action failed: {shot.error}" + (f" {note}" if note else ""), True
        return shot, note, False

    async def network(self, session: dict[str, Any], tenant: str) -> Any:
        """The session's container's network policy (secrets opened): the desktop's browser reaches what the
        environment allows, through the egress proxy, and nothing else (None: no network). The container is kept
        alive by the call, as by a shell command: a session that only uses its desktop is in use."""
        environment = session.get("environment") or {}
        if self.containers is None or not environment.get("id"):
            return None
        container = await self.containers.live(str(environment["id"]), tenant=tenant)
        if container is None:
            raise DesktopUnavailable("the session's environment expired (its container is gone)")
        await self.containers.touch(container.id, tenant=tenant)
        try:
            return self.containers.network.opened(container)
        except (ValueError, APIError) as error:
            raise DesktopUnavailable(f"the environment's network policy cannot be opened: {error}") from None

    @staticmethod
    def fresh_line(why: str | None) -> str:
        """What the model is told of a fresh desktop where the session had one (``why`` it stopped; None: with
        the server running it)."""
        return FRESH.format(why=WHY.get(why, why) if why is not None else RESTARTED)

    async def _fresh_note(self, runner: TurnRunner, call: dict[str, Any], why: str | None) -> str | None:
        """Whether the model must be told the desktop is fresh: the session had one before — in this process
        (``why`` it stopped: idle, or failed) or in a stopped one (its earlier computer calls are among its
        items)."""
        if why is not None:
            return self.fresh_line(why)
        after = None
        while True:
            page = await runner.store.page("item", tenant=runner.tenant, parent=runner.session_id, after=after,
                                           limit=100, order="asc")
            if any(item.get("type") == "computer_use_call" and item.get("id") != call["id"] for item in page.data):
                return FRESH.format(why=RESTARTED)
            if not page.has_more or not page.data:
                return None
            after = page.data[-1]["id"]

    async def stop(self, session_id: str) -> None:
        """The session ended or was deleted: its desktop stopped."""
        await self.desktops.stop(session_id)
        self.desktops.stopped.pop(session_id, None)
