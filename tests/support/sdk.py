"""The OpenAI SDK's clients as the tests make them: one per test, all sharing one TLS context.

The SDK's default HTTP client builds a TLS context with the CA bundle loaded for each client made (~20 ms of CPU,
whatever the URL: the tests' are all plain HTTP on loopback); the suite makes one per test that takes the SDK, so
one context is made per test process and handed to each client instead (every client a test makes: the
fixtures' and the tests' own).
"""

from __future__ import annotations

import functools
import ssl
from typing import Any

import httpx
import openai


@functools.cache
def _tls() -> ssl.SSLContext:
    return httpx.create_ssl_context()


def async_sdk(**options: Any) -> openai.AsyncOpenAI:
    """``openai.AsyncOpenAI(**options)`` on the shared context, the SDK's own HTTP client otherwise (its
    ``DefaultAsyncHttpxClient``: the same timeout, limits and redirects as when it makes one)."""
    return openai.AsyncOpenAI(http_client=openai.DefaultAsyncHttpxClient(verify=_tls()), **options)


def sync_sdk(**options: Any) -> openai.OpenAI:
    """``openai.OpenAI(**options)`` on the shared context (the fuzzers' setup calls, from their worker threads)."""
    return openai.OpenAI(http_client=openai.DefaultHttpxClient(verify=_tls()), **options)
