"""Persistence of responses for retrieval, deletion, ``input_items`` and ``previous_response_id`` chains.

Data only: imports the pools' rule (what a load is charged), observability and the leaves; never protocol,
the engine or anything above them.
"""

from .base import ConversationStore, PromptStore, ResponseStore
from .records import MAX_PAGE_LIMIT, InvalidCursor, InvalidPageArgs, ItemPage, StoredResponse
from .sqlite.migrations import LATEST_VERSION, MIGRATIONS, migrate
from .sqlite.responses import SQLiteResponseStore, default_db_path

__all__ = [
    "LATEST_VERSION",
    "MAX_PAGE_LIMIT",
    "MIGRATIONS",
    "ConversationStore",
    "InvalidCursor",
    "InvalidPageArgs",
    "ItemPage",
    "PromptStore",
    "ResponseStore",
    "SQLiteResponseStore",
    "StoredResponse",
    "default_db_path",
    "migrate",
]
