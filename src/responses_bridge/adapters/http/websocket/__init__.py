"""WebSocket mode (``GET /v1/responses`` with ``Upgrade: websocket``): the connection and its turns
(``connection.py``), their lanes, steering, and client-owned tool output injected into a running response.

Imports the door's plumbing and the services of the Responses path.
"""
