"""Files, uploads, vector stores, ingestion, embeddings and retrieval.

Below containers, tools and responses; may use tenancy.
"""
