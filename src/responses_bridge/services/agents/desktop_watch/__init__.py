"""Watching a session's desktop live: what the HTTP door asks for a session's desktop (registry.py) and the one
frame feed per watched desktop its watchers share (feed.py). The door serves the page and the frames
(adapters/http/agents/desktop_watch_routes.py); whatever owns the sessions' desktops answers :class:`DesktopRegistry`.

Nothing is imported here: the runtime holds a registry (registry.py, typing only) from its start, while the feeds
are the Agents API's, loaded with it (adapters/http/agents/capability.py); import each from its module.
"""
