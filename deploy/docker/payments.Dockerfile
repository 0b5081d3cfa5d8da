# syntax=docker/dockerfile:1
# The payments service (payments DB, state machine, provisioning).
# Build from the repository root (it needs shared/ and constraints.txt):
#   docker build -f deploy/docker/payments.Dockerfile -t axiomid/payments .
# Every service's Dockerfile follows the same pattern (deploy/docker/README.md).

# --- builder: the service and shared/ installed into a venv, versions from constraints.txt ---
FROM python:3.11.14-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY constraints.txt ./
COPY shared/ shared/
COPY services/payments/ services/payments/
# Not editable: the runtime stage gets installed packages only, not the source tree.
# libsql-client (remote libSQL/Turso) with --no-deps: it declares a Sphinx theme as a runtime
# dependency by mistake and imports only aiohttp, which is already here.
RUN /opt/venv/bin/pip install --no-compile -c constraints.txt ./shared ./services/payments \
 && /opt/venv/bin/pip install --no-compile --no-deps -c constraints.txt libsql-client \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib

# --- runtime: the same Python, the venv, a non-root user, nothing else ---------------------
FROM python:3.11.14-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="axiomid-payments" \
      org.opencontainers.image.description="AxiomID payments: payments DB, state machine, provisioning"
RUN groupadd --system --gid 10001 axiom \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin axiom
COPY --from=builder /opt/venv /opt/venv
# HOST=0.0.0.0: reachable from other containers. Secrets come from the environment or
# <NAME>_FILE at run time, never from the image.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    PAYMENTS_PORT=8082 \
    LOG_JSON=true
WORKDIR /app
USER 10001:10001
EXPOSE 8082
# aiohttp handles SIGTERM: stop taking work, finish what is in flight, drain NATS, exit 0.
STOPSIGNAL SIGTERM
# slim has no curl: ask /healthz with the Python that is there.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PAYMENTS_PORT', '8082') + '/healthz', timeout=2)"]
ENTRYPOINT ["python", "-m", "axiom_payments"]
