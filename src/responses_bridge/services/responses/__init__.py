"""The core Responses path beyond the engine: background runs, stored chat completions, conversations, prompts,
compaction, token counts, listing and retention.

Imports neither agents nor containers.
"""
