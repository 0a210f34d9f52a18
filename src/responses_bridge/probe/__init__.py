"""Probing an upstream: what a backend can do (``responses-bridge probe URL``), the cache of what was found, and
the probe of ``mode: auto`` upstreams at start."""
