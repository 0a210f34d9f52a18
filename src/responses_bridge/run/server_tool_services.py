"""What the process offers the tool loop, built once from the settings: the MCP client, the web search provider,
the vector store search behind ``file_search``, the image generation's settings, where programs run.

Apart from ``server_tools.py`` so that the set-up and the call runner, which both need it, import it without
importing the module that imports them.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..engine.tools.builtin import served_tool_types
from ..engine.tools.programs import ProgramSigner
from ..process.off_loop_import import import_off_loop
from .tools.file_search import FileSearcher
from .tools.mcp import MCPTools
from .tools.web_search import SearchCache, SearchProvider, provider_from_settings

if TYPE_CHECKING:
    from .programs.host import MemoryHold, ProgramHost
    from .tools.code_interpreter import CodeInterpreterService
    from .tools.image_generation import ImageSettings
    from .tools.mcp_config import MCPLimits
    from .tools.mcp_connectors import ConnectorRegistry
    from .tools.shell import HostedShellService
    from .tools.web_search_base import WebSearchSettings


DEFAULT_MAX_PARALLEL = 8


@functools.cache
def programs_available() -> bool:
    """Is the ``programs`` extra installed? (Without it ``programmatic_tool_calling`` is refused, naming it.) Looked
    up once per process: the look-up walks ``sys.path`` on disk (a stat per entry), and every request reads what
    the tool loop serves (it was 5% of a JSON request's CPU through the HTTP door). Here, not in run/programs/:
    reading it must not import the programs' modules."""
    return importlib.util.find_spec("py_mini_racer") is not None


@dataclass(slots=True)
class ProgramHosting:
    """Where the process's programs run, made by the first program that runs: until then none of run/programs/
    is imported (its worker pool, isolate, replay: tests/unit/test_idle_imports.py), nor its slots and threads
    made, in a process no request has asked to run one. The host's bounds, ``share`` and ``hold`` are given by
    the composition root (runtime.py: the settings', the memory budget's); ``sign`` keys programs' fingerprints,
    which a response needs before any of its programs runs (the ``program`` item the model's call makes, an item
    sent back checked) — the host's own ``sign`` is the same one."""

    sign: ProgramSigner
    slots: int
    slot_wait: float
    memory_bytes: int
    lower_after: float
    share: Callable[[str], int] | None = None
    hold: MemoryHold | None = None
    _host: ProgramHost | None = field(default=None, init=False, repr=False)

    async def host(self) -> ProgramHost:
        """The host, made now if no program ran before (its modules imported off the event loop)."""
        if self._host is None:
            await import_off_loop(".programs.host", __package__)
            from .programs.host import ProgramBounds, ProgramHost

            if self._host is None:  # another first program may have made it while this one waited for the import
                self._host = ProgramHost(self.sign, ProgramBounds(self.slots, self.slot_wait, self.memory_bytes,
                                                                  lower_after=self.lower_after),
                                         share=self.share, hold=self.hold)
        return self._host

    @property
    def built(self) -> ProgramHost | None:
        """The host once a program made it; None before (the console shows its slots only then)."""
        return self._host

    def close(self) -> None:
        """Stop the host's workers and threads, if a program ever made it."""
        if self._host is not None:
            self._host.close()


@dataclass(slots=True)
class ServerToolServices:
    """What the process offers the tool loop: the MCP client (with its tool-list cache), the web search provider
    (None: no search configured), the file searcher (None: no vector stores), the code interpreter (None: no
    containers), the image generation (None: the upstream makes no images), the hosted shell (None: no
    containers), and how many calls of one turn may run
    at once."""

    mcp: MCPTools
    search: SearchProvider | None = None
    max_parallel: int = DEFAULT_MAX_PARALLEL
    file_search: FileSearcher | None = None
    code: CodeInterpreterService | None = None
    images: ImageSettings | None = None
    shell: HostedShellService | None = None
    search_cache: SearchCache = field(default_factory=SearchCache)  # live searches' results, per tenant
    programs: ProgramHosting | None = None  # where programs run (run/programs/host.py); None: programs not served

    @classmethod
    def configured(cls, mcp_limits: MCPLimits, web_search: WebSearchSettings | None,
                   file_search: FileSearcher | None = None,
                   images: ImageSettings | None = None,
                   connectors: ConnectorRegistry | None = None
                   ) -> ServerToolServices:
        """The process's services from what the settings derive (``Settings.mcp_limits()``,
        ``Settings.web_search_settings()``, ``Settings.image_settings()``; the run imports no configuration) and
        the vector store service, when the process has one; ``connectors``: the operator's connector registry
        (``Settings.mcp_connector_registry()``). Close them with :meth:`aclose` when the process stops
        (the vector store service is borrowed: its owner closes it)."""
        return cls(MCPTools(mcp_limits, connectors=connectors), provider_from_settings(web_search),
                   file_search=file_search, images=images)

    async def aclose(self) -> None:
        """Close the search provider's HTTP session (MCP sessions live only as long as each operation)."""
        if self.search is not None:
            await self.search.aclose()
        if self.programs is not None:
            self.programs.close()

    @property
    def served(self) -> frozenset[str]:
        """The tool types the loop runs, for ``plan_tools(served=…)``: without a search provider the web search
        types are not served, nor ``file_search`` without a file searcher, nor ``image_generation`` when the deployment
        has not switched it on, so the unsupported-tool policy (drop or
        400) applies to them, as before."""
        served = served_tool_types(self.search is not None, self.file_search is not None, self.code is not None,
                                   self.images is not None, self.shell is not None)
        if programs_available() and self.programs is not None:
            return served
        return served - {"programmatic_tool_calling"}
