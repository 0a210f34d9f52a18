"""The house's bar on size: no serving module over 500 lines. A module past it is split by what its parts do (as
engine/responses/translator.py and store/base.py were), not trimmed; the demo's fake model in ``demo/`` is not served
and is left out (the benchmarks are outside the package, in the checkout's ``tools/``)."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "responses_bridge"
LIMIT = 500


def test_no_serving_module_is_over_the_limit() -> None:
    sizes = {str(path.relative_to(PACKAGE)): len(path.read_text().splitlines())
             for path in PACKAGE.rglob("*.py") if "demo" not in path.relative_to(PACKAGE).parts}
    assert len(sizes) > 100  # the walk saw the package
    over = {name: lines for name, lines in sizes.items() if lines > LIMIT}
    assert not over, f"serving modules over {LIMIT} lines: {over}"
