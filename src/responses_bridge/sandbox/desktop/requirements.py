"""What a desktop needs on this machine, and what is missing, each named by what installs it: Debian's packages
(scripts/_sandbox.sh installs them as it installs bubblewrap), Pillow with its XCB grab (the ``desktop`` extra),
and a sandbox in the cgroup mode (a browser is many processes; the single-process mode allows one).

Looked up on the host's file system, which the sandbox binds read-only (``/usr``): what is here is what a call
sees. Cheap (a few ``stat`` calls), so :meth:`Desktop.start` checks it each time and ``doctor`` says it.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..runner import Sandbox

SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
"""Where the sandbox's ``PATH`` finds programs (sandbox/command.py), less the environments' packages."""
DEFAULT_BROWSER = "/usr/lib/chromium/chromium"
PACKAGES: tuple[tuple[str, str, str], ...] = (
    ("xvfb", "Xvfb", "the virtual display"),
    ("xdotool", "xdotool", "the pointer and keyboard"),
    ("chromium", DEFAULT_BROWSER, "the browser"),
    ("fonts-dejavu-core", "/usr/share/fonts/truetype/dejavu", "the fonts pages are drawn with"),
)
"""(Debian package, program or path it installs, what it is for)."""
INSTALL = "apt-get install xvfb xdotool chromium fonts-dejavu-core"
EXTRA = "pip install 'responses-bridge[desktop]'"


def _found(what: str) -> bool:
    if what.startswith("/"):
        return os.path.exists(what)
    return any(os.access(os.path.join(folder, what), os.X_OK) for folder in SANDBOX_PATH.split(":"))


def missing_packages(browser: str = DEFAULT_BROWSER) -> list[str]:
    """The Debian packages whose program is not on this machine (the browser: ``browser`` if not the default)."""
    return [package for package, what, _ in PACKAGES
            if not _found(browser if package == "chromium" else what)]


@functools.cache
def pillow_problem() -> str | None:
    """Why the desktop's screenshots cannot be taken (None: they can): Pillow missing, or built without XCB."""
    try:
        from PIL import features
    except ImportError:
        return f"Pillow is not installed (the desktop's screenshots): {EXTRA}"
    if not features.check("xcb"):
        return f"this Pillow was built without XCB, which the desktop's screenshots need: {EXTRA}"
    return None


def desktop_unavailable(sandbox: Sandbox, *, browser: str = DEFAULT_BROWSER) -> str | None:
    """Why no desktop can run with this sandbox, naming what to install or change (None: one can)."""
    if sandbox.unavailable is not None:
        return f"the sandbox cannot run here: {sandbox.unavailable}"
    if sandbox.mode != "cgroup":
        return (f"a desktop needs the sandbox's cgroup mode (a browser is many processes): "
                f"{sandbox.shell_unavailable or 'the single-process mode allows one'}")
    missing = missing_packages(browser)
    if missing:
        return (f"the desktop needs Debian packages missing here: {', '.join(missing)} "
                f"(apt-get install {' '.join(missing)})")
    return pillow_problem()
