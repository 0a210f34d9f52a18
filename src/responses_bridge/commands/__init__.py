"""The ``responses-bridge`` commands beside ``serve`` (``config``, ``keys``, ``doctor``, ``desktop-url``), and what
``serve`` and every command that reads settings check before they start: environment variables no setting reads
(``env_check.py``), the upstreams a deployment serves (``upstream_check.py``), whether runs are
durable (``durability_check.py``).

cli.py registers each command; a command may import the runtime and every room below it, never a door.
"""
