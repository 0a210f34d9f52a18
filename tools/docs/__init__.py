"""The renderers of what is generated and committed: docs/configuration.md and the Envoy snippets of
docs/deployment.md (``reference.py``), docs/api.md's table (``api_surface.py``), protocol/known_fields_table.py
(``known_fields.py``), the Envoy renderings in envoy/ and deploy/ (``deploy_examples.py``,
``upstream_replacements.py``). The tests check that each committed file is current.
"""
