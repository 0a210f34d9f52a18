"""Environments as the wire carries them (their fields, packages, plugins, templates, capability directories)
and the note on a container's skills.

Below agents; may use files and the protocol's shared modules (protocol/).
"""
