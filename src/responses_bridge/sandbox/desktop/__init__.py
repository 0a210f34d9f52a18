"""The desktop inside the sandbox, for OpenAI's ``computer_use``: a virtual display (Xvfb), a browser (Chromium),
input (xdotool) and JPEG screenshots taken from the display, all in ONE long-lived call of the bubblewrap backend —
its unprivileged uid, its read-only file system, its egress proxy as the only way out, its cgroup, its slot — or
in one pod of the agent-sandbox backend's desktop pool (host.py: where the desktop's process runs).

- desktop.py: :class:`Desktop` (``start``, ``act``, ``screenshot``, ``stop``) and its settings;
- host.py: where its process runs and how it is reached (the bubblewrap call's socket; a pod's stdio elsewhere);
- actions.py: OpenAI's GA computer actions parsed strictly, and turned into xdotool's arguments;
- agent.py: the desktop's own process inside the call (sent as its code: standard library and Pillow only);
- browser.py: its browser, started again when it has gone (a last tab closed, a crash, a kill), sent with agent.py;
- devtools.py: Chromium's DevTools protocol over a pipe of its own, sent with agent.py;
- page.py: the page's DOM as the browser knows it, sent with agent.py (a sign-in form found, checked and filled,
  its submission watched: only to its credential origin);
- masking.py: a sign-in's submitted values masked in every screenshot (or the screen withheld), sent with agent.py;
- proxy_relay.py: the browser's way to a proxy that wants a credential (a pod's egress door), sent with agent.py;
- origins.py: the origins the browser may reach, approved one by one (the call's egress proxy asks);
- egress_watch.py: what the call's egress proxy is given (origins, the browser's rates) and tells (its refusals);
- sign_in.py: a sign-in form as OpenAI's ``browser_authentication`` describes it, and a client's values checked;
- requirements.py: what a desktop needs here, and what is missing (``doctor``, and ``Desktop.start``'s refusal).

Imports: the sandbox package (runner, limits, egress policy, results), protocol/errors.py (a bad action is an
OpenAI-shaped 400) and the standard library; Pillow only inside the call. Nothing of the engine, the services or the
store: the agent tool that drives a desktop (a later step) imports this, never the other way round.
"""

from .actions import Action, ActionError, parse_actions
from .desktop import Desktop, DesktopSettings, DesktopUnavailable, Screenshot
from .requirements import desktop_unavailable, missing_packages
from .sign_in import SignInError, SignInField, SignInForm, submitted_values

__all__ = ["Action", "ActionError", "Desktop", "DesktopSettings", "DesktopUnavailable", "Screenshot", "SignInError",
           "SignInField", "SignInForm", "desktop_unavailable", "missing_packages", "parse_actions", "submitted_values"]
