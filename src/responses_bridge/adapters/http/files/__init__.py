"""The Files, Uploads and Vector Stores APIs' routes on the HTTP door, and the reading of an upload's body; the
Vector Stores API's registered by its prefix only (capability.py), loaded by the first request under it.

Imports the door's plumbing and services/files/ with what it may use.
"""
