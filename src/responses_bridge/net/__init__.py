"""The bridge's outbound connections, one way each: which hosts it may connect to on a request's behalf
(``host_policy.py``), a whole answer read with a ceiling (``bounded_body.py``), a failed connection in words
(``errors.py``), and byte sequences replaced in a stream cut anywhere (``stream_replace.py``: domain secrets).

A leaf: imports nothing of the bridge, and every room may import it.
"""
