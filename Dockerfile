# responses-bridge: the sidecar (ext_proc door on 50051, HTTP door on 8080), from its wheel.
#   docker build -t responses-bridge .
#   docker run -p 8080:8080 -p 50051:50051 -v bridge-data:/data responses-bridge --upstream http://HOST:8000/v1
# Arguments after the image name go to `responses-bridge serve`; settings also come from RESPONSES_BRIDGE_*
# variables (docs/configuration.md).

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# Build stage: the wheel and a virtual environment holding it and its dependencies (scripts/image-venv, the
# same steps tests/deploy/test_image.py runs). Nothing of the source tree goes further than this stage.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY build_backend ./build_backend
COPY src ./src
COPY scripts/image-venv /usr/local/bin/
RUN image-venv /src /opt/responses-bridge

# Run stage: the same base (the venv's interpreter links to it), the venv, a non-root user, /data for SQLite.
FROM ${PYTHON_IMAGE}
# bubblewrap: the code interpreter's sandbox (without it the code_interpreter tool is refused, never run unsandboxed).
# tini: the container's init (the entry point below). Not pinned: the distribution's security updates to them must
# reach the image at every build.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends bubblewrap tini && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 responses-bridge \
    && useradd --system --uid 10001 --gid responses-bridge --home-dir /data --no-create-home responses-bridge \
    && mkdir /data \
    && chown responses-bridge:responses-bridge /data
COPY --from=build /opt/responses-bridge /opt/responses-bridge
# In a container the doors listen on every interface (the container's network is the boundary); the Kubernetes
# sidecar manifests set them back to loopback, where only Envoy in the same pod reaches them.
ENV PATH=/opt/responses-bridge/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RESPONSES_BRIDGE_HTTP_HOST=0.0.0.0 \
    RESPONSES_BRIDGE_EXTPROC_HOST=0.0.0.0 \
    RESPONSES_BRIDGE_DB=/data/responses.sqlite
# Never root while serving. Where the runtime grants a writable cgroup (Docker Engine 28+ writable-cgroups=true,
# containerd 2.1+, CRI-O, GKE: docs/kubernetes.md), start the container as root with RESPONSES_BRIDGE_RUN_AS=10001:10001:
# `serve` hands its cgroup to this user, as systemd delegates, and drops to it before serving, so each code
# interpreter and shell call gets a cgroup of its own (docker-compose.writable-cgroup.yml, the writable-cgroups
# Kustomize component).
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080 50051
# Ready, not just alive: store open and migrated, writes not stalled, not draining (docs/operations.md).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('RESPONSES_BRIDGE_HTTP_PORT', '8080') + '/health/ready', timeout=2)"]
# tini is PID 1: it reaps the processes handed to it (each code interpreter call leaves one) and passes signals on
# to the bridge; -s keeps it reaping when it is not PID 1 (compose's `init: true`, a pod sharing its PID namespace).
# Without it (a `command:` override), `serve` as PID 1 runs behind an init of its own (src/responses_bridge/process/pid1.py).
ENTRYPOINT ["tini", "-s", "--", "responses-bridge", "serve"]
