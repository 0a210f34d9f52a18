"""The two doors: ``http/`` (aiohttp: every route of the API, WebSocket mode, the drain) and ``extproc/`` (Envoy's
external processor over gRPC), and what both use to reach an upstream (``upstream_client.py``) and to stream
(``pieces.py``).

A door only adapts bytes: it may import the runtime and every room below it (services, settings, the run, the
engine, the store, protocol, observability); the two doors never import each other, and nothing below imports a
door.
"""
