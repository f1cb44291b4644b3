# syntax=docker/dockerfile:1
# The pipeline's image: `connect-pipeline run` by default; `connect-sim` and
# `connect-pipeline produce` (docker-compose's demo) come from the same install.

# --- build: a virtualenv with the project and its pinned dependencies ---------------------
FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY connect_sim ./connect_sim
# every dependency is pinned to an exact version in pyproject.toml; all ship wheels
RUN /opt/venv/bin/pip install --no-compile . \
    && /opt/venv/bin/pip uninstall --yes pip setuptools wheel

# --- runtime: the virtualenv and the schemas, nothing else; no compiler, no pip ---------------
FROM python:3.11.14-slim-bookworm
LABEL org.opencontainers.image.title="connect-signals-pipeline" \
      org.opencontainers.image.description="Kafka clickstream events to Connect createSignals calls"
# pip and setuptools of the base image are not needed at run time
RUN python -m pip uninstall --yes pip setuptools wheel \
    && useradd --system --uid 10001 --gid 0 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin pipeline
COPY --from=build /opt/venv /opt/venv
COPY avro /app/avro
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIPELINE_AVRO_DIR=/app/avro \
    PIPELINE_HTTP_HOST=0.0.0.0 \
    PIPELINE_HTTP_PORT=9400
WORKDIR /app
USER 10001
EXPOSE 9400
# liveness: the poll loop turned recently (python, not curl: the image has no curl)
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PIPELINE_HTTP_PORT', '9400') + '/healthz', timeout=3)"]
ENTRYPOINT ["connect-pipeline"]
CMD ["run"]
