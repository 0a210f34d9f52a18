"""A lazily imported extra that fails to import says why: "install the extra" only when one of its distributions
is really absent, and otherwise the import that failed with its error (extras.py). Both cases are made for real
in a fresh interpreter: an installed ``otel`` extra whose ``opentelemetry/proto`` is shadowed by an older copy
(what xds-protos did to a user's venv), and a venv view with one of the extra's distributions taken out."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from responses_bridge import extras

ROOT = Path(__file__).resolve().parents[2]
SITE = Path(sysconfig.get_paths()["purelib"])

_CONFIGURE = textwrap.dedent("""
    from responses_bridge.observability import tracing
    try:
        tracing.configure_tracing({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    except RuntimeError as error:
        print(error)
    else:
        print("configured")
    print(tracing.keeping_missing() or "keeping")  # what the Agents API's traces route answers with
""")


def _run(code: str, env: dict[str, str] | None = None, argv: tuple[str, ...] = ()) -> str:
    result = subprocess.run([sys.executable, *argv, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, **(env or {})}, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_an_installed_but_broken_otel_extra_names_the_failed_import(tmp_path: Path) -> None:
    """An older ``opentelemetry/proto`` first on the path (every otel distribution installed): tracing refuses to
    start naming the exporter's import and the error, not "not installed" and the pip line."""
    common = tmp_path / "opentelemetry" / "proto" / "common" / "v1"
    common.mkdir(parents=True)
    for package in (common.parents[1], common.parent, common):
        (package / "__init__.py").write_text("")
    (common / "common_pb2.py").write_text("AnyValue = ArrayValue = KeyValue = KeyValueList = object  # no scope\n")
    lines = _run(_CONFIGURE, env={"PYTHONPATH": str(tmp_path)}).splitlines()
    start, route = lines[0], lines[-1]  # between them, the full line as logged
    failed = ("the otel extra is installed, but importing responses_bridge.observability.otel failed (in "
              "opentelemetry.proto.common.v1.common_pb2): ImportError: cannot import name 'InstrumentationScope' "
              "from 'opentelemetry.proto.common.v1.common_pb2'")
    assert start.startswith(f"tracing is configured (OTEL_EXPORTER_OTLP_ENDPOINT, "
                            f"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT): {failed} ({tmp_path}"), start  # the file
    assert route == failed  # an API answer: without the file's path
    assert "pip install" not in start + route


def test_an_absent_distribution_says_install_the_extra(tmp_path: Path) -> None:
    """The same start in a view of this venv without opentelemetry-exporter-otlp-proto-http (its modules and its
    metadata): the install line, naming what is missing."""
    view = tmp_path / "site-packages"
    view.mkdir()
    for entry in SITE.iterdir():
        if entry.name.startswith("opentelemetry_exporter_otlp_proto_http-"):
            continue  # its metadata: the distribution is absent
        if entry.name == "opentelemetry":
            (view / entry.name).mkdir()
            for child in entry.iterdir():
                if child.name != "exporter":  # its modules (and the other exporter packages' with them)
                    (view / entry.name / child.name).symlink_to(child)
            continue
        (view / entry.name).symlink_to(entry)
    # -S: no site-packages but the view (its .pth files read, the project's editable install among them)
    code = f"import site, sys; site.addsitedir({str(view)!r}); sys.path.insert(0, {str(ROOT / 'src')!r})\n"
    start, route = _run(code + _CONFIGURE, argv=("-S",)).splitlines()
    missing = ("OpenTelemetry is not installed: pip install 'responses-bridge[otel]' (not installed: "
               "opentelemetry-exporter-otlp-proto-http)")
    assert start == ("tracing is configured (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT): "
                     + missing), start
    assert route == missing


def test_extra_distributions_come_from_the_installed_metadata() -> None:
    assert set(extras.extra_distributions("otel")) == {
        "opentelemetry-api", "opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http",
        "opentelemetry-propagator-b3"}
    assert set(extras.extra_distributions("postgres")) == {"asyncpg", "pgvector"}
    assert extras.extra_distributions("no-such-extra") == []
    assert extras.missing_distributions("postgres") == []  # the test venv has every extra


def test_an_import_error_raised_inside_an_installed_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A module of the extra that raises ImportError itself (a missing system library, say): the line names the
    import and the error, and for an API answer leaves the file path out (it is logged in full)."""
    (tmp_path / "broken_driver.py").write_text(
        "raise ImportError(\"libpq.so.5: cannot open shared object file\", name='broken_driver._native', "
        f"path={str(tmp_path / 'broken_driver' / '_native.so')!r})\n")
    (tmp_path / "pathy.py").write_text("from broken_driver import connect\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError) as raised:
        import pathy  # noqa: F401
    line = extras.explain("postgres", "pathy", raised.value, "needs the postgres extra")
    assert line == ("the postgres extra is installed, but importing pathy failed (in broken_driver._native): "
                    "ImportError: libpq.so.5: cannot open shared object file")
    missing_name = ImportError(f"cannot import name 'X' from 'mod' ({tmp_path}/mod.py)", name="mod")
    public = extras.explain("postgres", "mod", missing_name, "needs the postgres extra", public=True)
    assert public.endswith("ImportError: cannot import name 'X' from 'mod'") and str(tmp_path) not in public


def test_a_missing_module_without_the_project_metadata_falls_back_to_the_module(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A bare source tree (no installed metadata): a module that cannot be found at all stands for the missing
    distribution; one that exists and fails does not."""
    def no_metadata(name: str) -> list[str]:
        raise extras.importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(extras.importlib.metadata, "requires", no_metadata)
    assert extras.missing_distributions("otel", ModuleNotFoundError(name="no_such_top_module.sub")) == [
        "no_such_top_module"]
    assert extras.missing_distributions("otel", ModuleNotFoundError(name="opentelemetry.nothing")) == []


def test_a_local_embedder_whose_encoder_fails_to_import_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """The local embedder is chosen by finding its package on disk (no import at start); an encoder that then
    fails to import is an embedding error naming it, which ingestion records and search answers with."""
    from responses_bridge.services.files.retrieval.embedders import EmbeddingError, LocalStaticEmbedder

    embedder = LocalStaticEmbedder()
    monkeypatch.setitem(sys.modules, "static_model._static_model", None)  # the encoder's import fails
    with pytest.raises(EmbeddingError) as raised:
        embedder.embed_sync(["x"])
    assert str(raised.value).startswith("the retrieval extra is installed, but importing static_model._static_model "
                                        "failed: ModuleNotFoundError"), raised.value
    monkeypatch.undo()
    assert embedder.embed_sync(["x"]).shape == (1, LocalStaticEmbedder.DIMENSIONS)  # the same call, encoder back
