"""The desktop inside the sandbox, for OpenAI's ``computer_use``: a virtual display (Xvfb), a browser (Chromium),
input (xdotool) and JPEG screenshots taken from the display, all in ONE long-lived call of the bubblewrap backend —
its unprivileged uid, its read-only file system, its egress proxy as the only way out, its cgroup, its slot.

- desktop.py: :class:`Desktop` (``start``, ``act``, ``screenshot``, ``stop``) and its settings;
- actions.py: OpenAI's GA computer actions parsed strictly, and turned into xdotool's arguments;
- agent.py: the desktop's own process inside the call (sent as its code: standard library and Pillow only);
- requirements.py: what a desktop needs here, and what is missing (``doctor``, and ``Desktop.start``'s refusal).

Imports: the sandbox package (runner, limits, egress policy, results), protocol/errors.py (a bad action is an
OpenAI-shaped 400) and the standard library; Pillow only inside the call. Nothing of the engine, the services or the
store: the agent tool that drives a desktop (a later step) imports this, never the other way round.
"""

from .actions import Action, ActionError, parse_actions
from .desktop import Desktop, DesktopSettings, DesktopUnavailable, Screenshot
from .requirements import desktop_unavailable, missing_packages

__all__ = ["Action", "ActionError", "Desktop", "DesktopSettings", "DesktopUnavailable", "Screenshot",
           "desktop_unavailable", "missing_packages", "parse_actions"]
