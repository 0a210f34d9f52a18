"""Development tooling that ships only in a source checkout, not in the installed package: the benchmarks, the
renderers of the generated docs and deployment examples, and the doubles only tests and benchmarks start (the fake
Kubernetes API and stand-in pods of the agent-sandbox backend, the /proc readings of a process's memory). The wheel
leaves this package out: pyproject.toml."""
