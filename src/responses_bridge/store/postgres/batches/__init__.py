"""The Batch API's records on PostgreSQL: the schema (batch_schema.py) and the store (batches.py)."""
