"""The Batch API (``/v1/batches``): batches created over an uploaded JSONL file, validated, run line by line through
the endpoint's own code under the owner's tenant, on the capacity the gate gives (capacity.py), and durable across
the loss of their process (runner.py)."""
