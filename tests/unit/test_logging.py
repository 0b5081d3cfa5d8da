"""Logs: JSON lines with the correlation id, and no secret ever rendered."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from axiom_shared.logging import (
    bind_correlation_id,
    configure_logging,
    correlation_headers,
    get_logger,
    register_secret,
    unbind_correlation_id,
)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """capsys closes the stream these tests log to: leave logging as the other tests expect."""
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def _last_json_line(err: str) -> dict[str, object]:
    line = [ln for ln in err.splitlines() if ln.strip()][-1]
    parsed: dict[str, object] = json.loads(line)
    return parsed


def test_json_lines_carry_service_and_correlation_id(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("unit", json=True)
    cid = bind_correlation_id("req-123")
    try:
        get_logger("t").info("hello", payment_id="p1")
        assert correlation_headers() == {"X-Correlation-ID": "req-123"}
    finally:
        unbind_correlation_id()
    record = _last_json_line(capsys.readouterr().err)
    assert record["event"] == "hello"
    assert record["correlation_id"] == cid == "req-123"
    assert record["service"] == "unit"
    assert record["level"] == "info"


def test_invalid_incoming_correlation_id_is_replaced() -> None:
    cid = bind_correlation_id("bad id\nwith newline")
    unbind_correlation_id()
    assert cid != "bad id\nwith newline"
    assert len(cid) == 32


def test_secrets_are_redacted_by_key_and_by_value(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("unit", json=True)
    register_secret("s3cr3t-helius-value")
    log = get_logger("t")
    log.info(
        "got header s3cr3t-helius-value from caller",
        authorization="Bearer abc",
        helius_webhook_secret="whatever",
        nested={"api_key": "k", "note": "contains s3cr3t-helius-value"},
        amount=5,
    )
    try:
        raise ValueError("bad token s3cr3t-helius-value")
    except ValueError:
        log.exception("failed")
    err = capsys.readouterr().err
    assert "s3cr3t-helius-value" not in err
    assert "Bearer abc" not in err
    records = [json.loads(ln) for ln in err.splitlines() if ln.strip()]
    first = records[-2]
    assert first["authorization"] == "[REDACTED]"
    assert first["helius_webhook_secret"] == "[REDACTED]"
    assert first["nested"] == {"api_key": "[REDACTED]", "note": "contains [REDACTED]"}
    assert first["amount"] == 5
    assert "[REDACTED]" in str(records[-1]["exception"])
