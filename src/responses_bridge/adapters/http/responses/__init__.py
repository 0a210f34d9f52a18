"""The Responses API's routes on the HTTP door: ``/v1/responses`` (create, retrieve, delete, cancel, input items,
background streams and their resumption, an ``Idempotency-Key``'s replay), compaction and input token counts,
conversations, stored chat completions and prompts.

Imports the door's plumbing, WebSocket mode (``GET /v1/responses`` upgraded) and services/responses/ with what it
may use.
"""
