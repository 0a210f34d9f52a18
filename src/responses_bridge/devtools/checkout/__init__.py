"""Development tooling that ships only in a source checkout, not in the installed package: the benchmarks and the
renderers of the generated docs and deployment examples (the wheel leaves this package out: pyproject.toml)."""
