# syntax=docker/dockerfile:1
# Two images from one file:
#   docker build -t connect-signals-pipeline .                  production (the default, last
#       stage): only what `connect-pipeline run|replay|redrive|avro|check` needs; no demo,
#       simulator, embedded broker binary or their web stack
#   docker build --target dev -t connect-signals-pipeline:dev .   the same plus the dev
#       distribution (dev/): `connect-pipeline demo|produce|chaos` and `connect-sim`, for
#       docker-compose's demo and k8s/overlays/dev
#
# Dependencies come from the lock files (requirements.lock, dev/requirements.lock: `make
# lock`), every file checked against its hash. The base image is pinned by tag and by the
# digest of its multi-platform index; refreshing it (docs/operations.md, "Base image"):
#   docker buildx imagetools inspect python:3.11.14-slim-bookworm   -> the index's Digest
# checkov:skip=CKV_DOCKER_7:the base image is the ARG just above, pinned by version tag and digest
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

# --- build: a virtualenv with the product, from the lock file only --------------------------
# (the lock holds the `otel` extra too: tracing is off unless PIPELINE_TRACING=true)
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY requirements.lock ./
RUN /opt/venv/bin/pip install --require-hashes --no-deps --no-compile -r requirements.lock
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
# --no-deps: nothing beyond the lock; --no-build-isolation: the locked setuptools builds it
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation --no-compile .

# --- build-dev: the dev distribution on top (its lock is a superset of the product's) -------
FROM build AS build-dev
COPY dev/requirements.lock ./dev/requirements.lock
RUN /opt/venv/bin/pip install --require-hashes --no-deps --no-compile -r dev/requirements.lock
COPY dev ./dev
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation --no-compile ./dev

# --- the installed virtualenvs, without pip, compiled ahead of time ------------------------
# The root filesystem is read-only at run time: bytecode not compiled here would be
# recompiled in memory on every start. unchecked-hash .pyc files are used as they are,
# whatever the files' timestamps after COPY.
FROM build AS venv-production
RUN /opt/venv/bin/pip uninstall --yes pip setuptools wheel \
    && /opt/venv/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/venv/lib

FROM build-dev AS venv-dev
RUN /opt/venv/bin/pip uninstall --yes pip setuptools wheel \
    && /opt/venv/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/venv/lib

# --- runtime: the base image, a user, the schemas; no compiler, no pip ---------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="connect-signals-pipeline" \
      org.opencontainers.image.description="Kafka clickstream events to Connect createSignals calls"
# pip and setuptools of the base image are not needed at run time
RUN python -m pip uninstall --yes pip setuptools wheel \
    && useradd --system --uid 10001 --gid 0 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin pipeline
COPY avro /app/avro
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIPELINE_AVRO_DIR=/app/avro \
    PIPELINE_HTTP_HOST=:: \
    PIPELINE_HTTP_PORT=9400
# PIPELINE_HTTP_HOST=:: listens on IPv6 and IPv4 (dual stack: IPv6-only and dual-stack
# clusters); on a kernel booted without IPv6 set it to 0.0.0.0.
WORKDIR /app
USER 10001
EXPOSE 9400
# liveness: the poll loop turned recently (python, not curl: the image has no curl)
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PIPELINE_HTTP_PORT', '9400') + '/healthz', timeout=3)"]
ENTRYPOINT ["connect-pipeline"]
CMD ["run"]

# --- dev: docker-compose's demo (simulator, producer) and the k8s dev overlay --------------
FROM runtime AS dev
COPY --from=venv-dev /opt/venv /opt/venv

# --- production (the default target): the product alone ------------------------------------
FROM runtime AS production
COPY --from=venv-production /opt/venv /opt/venv
