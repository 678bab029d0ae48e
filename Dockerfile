# syntax=docker/dockerfile:1
# One image for the `flow` CLI and the `ematix-flow-operator`, non-root, slim.
#
#   docker build -t registry.example/ematix-flow:0.1.0 .
#
# Pipeline images are built FROM it with the team's own module (README, "Run on
# Kubernetes"):
#
#   FROM registry.example/ematix-flow:0.1.0
#   COPY my_pipelines.py /app/
#
# The working directory /app is on sys.path for `flow run … --module my_pipelines`.

ARG PYTHON_VERSION=3.11

# --- build: install the project and its operator extra into a virtualenv -----------
FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/ematix-flow
ENV PATH=/opt/ematix-flow/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ematix_flow ./ematix_flow
COPY operator ./operator
RUN pip install ".[operator]" \
    && flow --help >/dev/null \
    && ematix-flow-operator --help >/dev/null

# --- runtime: the virtualenv only, as an unprivileged user --------------------------
FROM python:${PYTHON_VERSION}-slim AS runtime
LABEL org.opencontainers.image.title="ematix-flow" \
      org.opencontainers.image.description="Declarative PostgreSQL sync pipelines: the flow CLI and the Kubernetes operator" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 ematix \
    && useradd --system --uid 10001 --gid ematix --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin ematix \
    && mkdir -p /app \
    && chown ematix:ematix /app
COPY --from=build /opt/ematix-flow /opt/ematix-flow
ENV PATH=/opt/ematix-flow/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
WORKDIR /app
# Numeric, so Kubernetes can verify runAsNonRoot without resolving names.
USER 10001:10001
CMD ["flow", "--help"]
