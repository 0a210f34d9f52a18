"""Another revision's ``responses_bridge`` beside this checkout's, for the benchmarks that compare the two in one run
(``scripts/bench chunks REV``, ``prompt-tools REV``, ``programs --base REV``).

Two runs, one per tree, would compare two patches of a shared machine as much as two trees; so the base revision's
package is taken out of git (``git archive``, run from the repository's root) and measured beside this checkout's,
in alternating rounds: in another sidecar process (``PYTHONPATH`` at its ``src``), or in this very process under the
name ``rb_base``, its metrics renamed so that the two copies do not register the same Prometheus names twice.

The engine's modules moved (engine/responses/, engine/tools/, protocol/responses/): a base revision from before the
move has them at their old paths, so each is looked up at its new path first, then its old one.
"""

from __future__ import annotations

import importlib
import io
import re
import subprocess
import tarfile
from pathlib import Path
from types import ModuleType


def extract(revision: str, into: Path) -> Path:
    """``git archive REVISION src/responses_bridge`` extracted under ``into``; its ``src`` (for ``PYTHONPATH``). A
    revision git does not know ends the benchmark with git's own message and status."""
    archive = subprocess.run(["git", "archive", revision, "src/responses_bridge"], stdout=subprocess.PIPE,
                             check=False)
    if archive.returncode:
        raise SystemExit(archive.returncode)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def as_rb_base(revision: str, into: Path, metric_files: list[tuple[str, ...]], kinds: str = "Counter") -> None:
    """The revision's package at ``into/rb_base`` (``into`` goes on ``sys.path``), the metrics it defines in
    ``metric_files`` (each the alternative paths of one module, new first) renamed ``rb_base_*``. ``kinds``: the
    metric classes renamed (``Counter|Histogram|Gauge``), the first on each line, as sed's ``s///`` did."""
    (extract(revision, into) / "responses_bridge").rename(into / "rb_base")
    pattern = re.compile(rf'({kinds})\("responses_bridge_')
    for paths in metric_files:
        path = next((into / "rb_base" / p for p in paths if (into / "rb_base" / p).is_file()),
                    into / "rb_base" / paths[0])
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(pattern.sub(r'\1("rb_base_', line, count=1) for line in lines))


def module(package: str, *names: str) -> ModuleType:
    """The first of ``names`` (paths under ``package``, new first) that ``package`` has."""
    for name in names[:-1]:
        try:
            return importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name is None or not f"{package}.{name}".startswith(exc.name):
                raise
    return importlib.import_module(f"{package}.{names[-1]}")
