"""Probing an upstream: what a backend can do (``responses-bridge probe URL``), the cache of what was found, and
the probe of ``mode: auto`` upstreams at start.

The command line registers ``probe`` with every command, ``serve`` too, so its default lives here, without the
checks (and their requests) that only a probe loads.

Imports the settings, the engine's shapes and the network's helpers; ``serve`` and the ``probe`` command use it.
"""

DEFAULT_TIMEOUT = 10.0  # seconds, one probe request, unless the probe command is told otherwise
