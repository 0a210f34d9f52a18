"""The HTTP door: the aiohttp application (``app.py`` assembles every folder's routes under one route table,
``routes.py``; ``server.py`` starts it) and its plumbing at this root — the caller's identity, per-tenant
limits, body pace and head deadline, request parameters and replies, errors in OpenAI's shape, observation,
keep-alives, downloads, multipart forms, the drain.

One folder per capability it serves, as ``services/`` is split: ``responses/``, ``websocket/``, ``agents/``,
``containers/``, ``files/`` and ``upstream/`` (what goes to the upstreams as it is). A folder imports this root's
plumbing and the services of its own capability (and what that capability may use); the plumbing imports no
folder, ``app.py`` aside. tests/unit/test_import_direction.py holds the rule.
"""
