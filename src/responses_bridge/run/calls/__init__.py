"""Pieces of the server-call loop (run/server_tools_calls.py) in modules of their own: each a self-contained job of
:class:`~responses_bridge.run.server_tools_calls.CallRunner` that kept that module over the house's 500 lines
(tests/unit/test_module_size.py), in a folder because run/ itself is at its 20 modules. None imports the loop.
"""
