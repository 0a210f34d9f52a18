"""What both doors share inside one process: settings, the open store, the engine's options."""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import Settings
from .engine.exchange import Exchange
from .engine.options import EngineOptions
from .sealing import Sealer, load_or_create_key
from .store import ResponseStore, SQLiteResponseStore


@dataclass
class Runtime:
    settings: Settings
    store: ResponseStore
    options: EngineOptions = field(default_factory=EngineOptions)
    sealer: Sealer | None = None

    @classmethod
    async def open(cls, settings: Settings) -> "Runtime":
        db_path = settings.db_path()
        sealer = Sealer(load_or_create_key(settings.sealing_key, db_path))
        store = SQLiteResponseStore(db_path)
        await store.open()
        return cls(settings=settings, store=store, options=settings.engine_options(), sealer=sealer)

    async def close(self) -> None:
        await self.store.close()

    def new_exchange(self) -> Exchange:
        return Exchange(self.store, self.options)

    def upstream_authorization(self, client_authorization: str | None) -> str | None:
        """The configured key wins; without one, the client's own credentials go upstream (a gateway in front
        of a multi-tenant provider must not swap every caller's key for its own)."""
        if self.settings.api_key:
            return f"Bearer {self.settings.api_key}"
        return client_authorization
