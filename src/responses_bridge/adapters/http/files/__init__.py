"""The Files, Uploads and Vector Stores APIs' routes on the HTTP door, and the reading of an upload's body.

Imports the door's plumbing and services/files/ with what it may use.
"""
