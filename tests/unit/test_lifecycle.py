"""The lifecycle has one definition: `ledger.TRANSITIONS`. DESIGN.md's diagram (when the design
is beside the repo, as it is where the code is written) and docs/payments.md must describe
exactly those moves, and `record_change` must refuse every other one."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from solders.pubkey import Pubkey

from axiom_payments.ledger import TRANSITIONS, IllegalTransition, PaymentRow, changed, record_change
from axiom_shared.schemas import ChangeSource, PaymentStatus

ROOT = Path(__file__).resolve().parents[2]
DESIGN = ROOT.parent / "shared" / "DESIGN.md"
EDGE = re.compile(r"([a-z|]+) --\(([^)]*)\)--> ([a-z]+)")


def diagram_edges(text: str) -> set[tuple[PaymentStatus, PaymentStatus]]:
    """The moves a lifecycle diagram draws (`a|b --(why)--> c`), chains included."""
    section = text.split("```", 2)[1] if "```" in text else text
    edges: set[tuple[PaymentStatus, PaymentStatus]] = set()
    for line in section.splitlines():
        for match in EDGE.finditer(line):
            for source in match[1].split("|"):
                edges.add((PaymentStatus(source), PaymentStatus(match[3])))
        # `a --(x)--> b --(y)--> c`: the second edge starts where the first ended.
        chained = re.finditer(r"--> ([a-z]+) --\(([^)]*)\)--> ([a-z]+)", line)
        for match in chained:
            edges.add((PaymentStatus(match[1]), PaymentStatus(match[3])))
    return edges


def table_edges() -> set[tuple[PaymentStatus, PaymentStatus]]:
    return {(a, b) for a, b in TRANSITIONS if a is not None}


def lifecycle_section(text: str) -> str:
    start = text.rindex("```", 0, text.index("pending --("))
    end = text.index("```", start + 3)
    return text[start : end + 3]


def test_docs_draw_exactly_the_transition_table() -> None:
    docs = (ROOT / "docs" / "payments.md").read_text(encoding="utf-8")
    assert diagram_edges(lifecycle_section(docs)) == table_edges()


def test_design_draws_exactly_the_transition_table() -> None:
    if not DESIGN.exists():
        pytest.skip("DESIGN.md is not beside this checkout")
    design = DESIGN.read_text(encoding="utf-8")
    assert diagram_edges(lifecycle_section(design)) == table_edges()
    # The repo's copy says the same as the design, word for word.
    docs = (ROOT / "docs" / "payments.md").read_text(encoding="utf-8")
    assert lifecycle_section(docs) == lifecycle_section(design)


def test_the_diagram_reader_is_not_vacuous() -> None:
    drawn = diagram_edges("```\npending|expired --(x)--> failed --(y)--> pending\n```")
    assert drawn == {
        (PaymentStatus.PENDING, PaymentStatus.FAILED),
        (PaymentStatus.EXPIRED, PaymentStatus.FAILED),
        (PaymentStatus.FAILED, PaymentStatus.PENDING),
    }


def row(status: PaymentStatus) -> PaymentRow:
    now = datetime.now(UTC)
    return PaymentRow(
        id=1, public_id="pay_" + "x" * 20, order_id="o", user_id="u",
        reference_key=str(Pubkey.new_unique()), amount_lamports=10, received_lamports=0,
        refund_due_lamports=0, recipient=str(Pubkey.new_unique()), status=status,
        tx_signature=None, expected_signature=None,
        failure_reason=None, last_check=None, version=3, correlation_id=None,
        expires_at=now + timedelta(minutes=15), finalized_at=None, created_at=now,
        updated_at=now, scan_cursor=None, scanned_at=None,
    )  # fmt: skip


def test_record_change_refuses_every_move_the_table_lacks() -> None:
    now = datetime.now(UTC)
    for before, after in itertools.product(PaymentStatus, PaymentStatus):
        old = row(before)
        new = changed(old, now, status=after)
        if before == after or (before, after) in TRANSITIONS:
            assert record_change(old, new, source=ChangeSource.OPERATOR)
        else:
            with pytest.raises(IllegalTransition):
                record_change(old, new, source=ChangeSource.OPERATOR)
    with pytest.raises(IllegalTransition):  # a change is exactly one version up
        record_change(
            row(PaymentStatus.PENDING), row(PaymentStatus.PENDING), source=ChangeSource.OPERATOR
        )
