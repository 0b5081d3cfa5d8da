# syntax=docker/dockerfile:1
# The payments service (payments DB, state machine, provisioning).
# Build from the repository root (it needs shared/ and deploy/locks/):
#   docker build -f deploy/docker/payments.Dockerfile -t axiomid/payments .
# Every service's Dockerfile follows the same pattern (deploy/docker/README.md).

# --- builder: the hash-pinned lock, then the service and shared/, into a venv --------------
FROM python:3.11.14-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv && python -m venv /opt/build
WORKDIR /src
COPY deploy/locks/payments.txt deploy/locks/build.txt deploy/locks/libsql-client.txt locks/
COPY shared/ shared/
COPY services/payments/ services/payments/
# Third-party packages only from the lock, each file checked against its sha256 (a package
# changed on the index fails the build); --no-deps: the lock is the whole closure, nothing
# else is resolved. Then shared/ and the service, built as wheels with setuptools from the
# build lock in a venv of its own (not in the image), installed without any index.
RUN /opt/venv/bin/pip install --no-compile --require-hashes --no-deps -r locks/payments.txt \
 && /opt/venv/bin/pip install --no-compile --require-hashes --no-deps -r locks/libsql-client.txt \
 && /opt/build/bin/pip install --require-hashes --no-deps -r locks/build.txt \
 && /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /tmp/wheels \
        ./shared ./services/payments \
 && /opt/venv/bin/pip install --no-compile --no-deps --no-index /tmp/wheels/*.whl \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib

# --- runtime: the same Python, the venv, a non-root user, nothing else ---------------------
FROM python:3.11.14-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="axiomid-payments" \
      org.opencontainers.image.description="AxiomID payments: payments DB, state machine, provisioning"
RUN groupadd --system --gid 10001 axiom \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin axiom
COPY --from=builder /opt/venv /opt/venv
# HOST=0.0.0.0: reachable from other containers. Secrets come from files named by
# <NAME>_FILE at run time (mounted secrets), never from the image.
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
