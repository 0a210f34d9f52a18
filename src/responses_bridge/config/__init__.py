"""The settings: :class:`~responses_bridge.config.settings.Settings` from flags over environment variables over the
YAML file over defaults, made of one group per module (endpoints, tools, connectors, sandbox, agent-sandbox,
pools, automations, desktops, upstreams, tenants), the configuration file's source, the help's wording of each
setting, and every mistake as one line (``errors.py``).

May import the rooms whose values the settings name (the run's tools, the engine's options, the sandbox's
limits, the store's URL, the pools' bounds) and the leaves; never the services, the runtime, a door or a command.
"""
