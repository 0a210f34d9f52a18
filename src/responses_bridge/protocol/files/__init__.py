"""File references, vector store search options and attribute filters: what a file search and the vector store
routes share.
"""
