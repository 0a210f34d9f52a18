"""``config check FILE``: every problem of a configuration file at once, not one layer per run.

Reading settings stops at the first layer that fails, which suits a start (``load_settings``: one line, exit 2) but
made ``config check`` a loop of fix-and-rerun: the keys no setting has first, then, once those were fixed, the bad
values, then the checks across settings (a model routed to an upstream no one named), which pydantic runs only
over valid values. Here the file is read leniently (an unknown key is noted, not fatal), every bad value is listed,
and the checks across settings are run too, with the bad values set aside at their defaults (when none of the
settings those checks read is among them, so that no problem is made up), and then the routing check ``serve``
makes at start. What only a file cannot be read past (missing, broken YAML, not a mapping) stays alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import ValidationError

from ..config import file as config_file
from ..config.errors import EnvJSONError, Sources, explain_each, explain_json
from ..config.settings import Settings, sources_of
from .upstream_check import check_routing

# The settings the checks across settings read (Settings' model validators): with one of them bad, what those
# checks would say with it set aside would be about a configuration the user did not write.
ACROSS = frozenset({"upstreams", "models", "default_upstream", "web_search", "brave_api_key", "tavily_api_key"})


@dataclass
class Report:
    """What ``config check`` prints: ``problems`` (exit status 1 when any) and ``warnings`` (the file is valid)."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check_file(path: str) -> Report:
    report = Report()
    with config_file.reading(path, lenient=True) as source:
        try:
            settings: Settings | None = Settings()
        except config_file.ConfigFileError as exc:  # no file, broken YAML, not a mapping: nothing more to read
            return Report([str(exc)])
        except EnvJSONError as exc:
            return Report([explain_json(exc, Settings, sources_of({}, None, source))])
        except ValidationError as exc:
            sources = sources_of({}, None, source)  # after the reading: the keys the file set are known now
            report.problems.extend(explain_each(exc, Settings, sources))
            settings = _across(exc, sources, report)
        if source is not None:
            report.problems[:0] = source.unknown
    if settings is not None:
        routing = check_routing(settings, config_path=path)
        if routing.error is not None:
            report.problems.append(routing.error)
        report.warnings.extend(f"{path}: no model is routed to the upstream {name!r}: no request reaches it"
                               for name in routing.unreached if routing.error is None)
    return report


def _across(exc: ValidationError, sources: Sources, report: Report) -> Settings | None:
    """With the settings that had bad values at their defaults, the checks across settings and the settings they
    give (for the routing check); None when that would say nothing true about the file."""
    bad = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
    if not bad or bad & ACROSS:
        return None
    defaults = {name: Settings.model_fields[name].get_default(call_default_factory=True) for name in bad}
    try:
        return Settings(**defaults)
    except ValidationError as again:
        report.problems.extend(line for error, line in zip(again.errors(), explain_each(again, Settings, sources),
                                                           strict=True) if not error["loc"])
        return None
    except (config_file.ConfigFileError, EnvJSONError):  # read once already without these
        return None
