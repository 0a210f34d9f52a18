"""Wire shapes: the request and its checks, input items, item references, errors in OpenAI's shape, metadata, the
known fields of the API, and one folder per capability (``responses/``, ``tools/``, ``files/``, ``containers/``,
``agents/``).

Imports only ids.py: every room that reads or writes the wire may import it; the store does not.
"""
