"""The process itself: ``serve --workers`` (``workers.py``) and its drain barrier, the init it runs behind as PID 1,
the event loop, the cyclic collector paused at start, the descriptor limit, whether a door's address is taken,
jobs run every so often (``periodic.py``) and imports made off the loop.

Imports nothing of the bridge but the settings' one exception (settings_error.py): every room above may use it.
"""
