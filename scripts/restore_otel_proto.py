"""Put opentelemetry-proto's own message classes back after an install.

xds-protos (the Envoy ext_proc stubs) ships an older copy of ``opentelemetry/proto``. When pip happens to install it
after opentelemetry-proto, the OTLP trace exporter no longer imports (``InstrumentationScope`` is missing), so
tracing could not be turned on. Run with the venv's interpreter after installing the project.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version


def exporter_imports() -> bool:
    check = "import opentelemetry.exporter.otlp.proto.http.trace_exporter"
    return subprocess.run([sys.executable, "-c", check], capture_output=True).returncode == 0


def main() -> int:
    try:
        installed = version("opentelemetry-proto")
    except PackageNotFoundError:  # installed without the otel extra: nothing to put back
        return 0
    if exporter_imports():
        return 0
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "--force-reinstall", "--no-deps", f"opentelemetry-proto=={installed}"],
                   check=True)
    if not exporter_imports():
        print("the OTLP trace exporter still does not import after reinstalling opentelemetry-proto",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
