"""The egress proxy of one sandbox call under an allowlist network policy: the only way out of a sandbox
(``proxy.py``), its reading of a request head, its policies (``policy.py``, ``scope.py``), bounds shared
bridge-wide (``limits.py``), domain secrets put in on the way out and never let back in (``domain_secrets.py``,
``answer.py``, ``tls.py``), what a ``CONNECT`` tunnel may carry, and origins approved one by one.
"""
