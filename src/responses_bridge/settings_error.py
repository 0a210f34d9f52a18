"""The one exception a configuration mistake becomes. In a module of its own, importing nothing, so the processes
that only need to catch it (the CLI's ``main``, the fake upstream's event loop choice) do not load pydantic-settings
and the explanations of config/errors.py to do so; config/errors.py and config/settings.py re-export it."""


class SettingsError(ValueError):
    """A setting with a value it cannot take; the message is one line naming the flag, variable or file."""
