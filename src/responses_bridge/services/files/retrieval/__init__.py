"""Retrieval for vector stores: text extraction, chunking, embedders, attribute filters and hybrid search."""
