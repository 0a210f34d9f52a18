"""The Batch API's records on SQLite: the schema (batch_schema.py) and the store (batches.py)."""
