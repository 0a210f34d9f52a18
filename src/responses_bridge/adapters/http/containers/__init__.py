"""The Containers and Skills APIs' routes on the HTTP door: containers and their files, skills and their versions.

Imports the door's plumbing and services/containers/ with what it may use. The door registers them by their
prefixes only (capability.py): their modules and services load with the first request under one.
"""
