"""The batch's rows split by delivery (what a refused batch is split into), and the reason a refused
delivery is dead-lettered with."""

from __future__ import annotations

import asyncpg

from engine.models import DeliveryStatus, Outcome, Reply, StatusEvent, ToolRun
from engine.store.messages import FlushRows
from engine.worker.batch import _reason
from engine.worker.staging import stage_message
from tests.unit.test_staging import _event, _state


def _run(n: int) -> ToolRun:
    return ToolRun(f"run-{n}", "lookup", "ok", 1, 1.0, {"n": n}, None, None)


def test_a_subset_keeps_each_kind_of_row_of_its_deliveries_only() -> None:
    rows = FlushRows()
    conversation, contact = _state()
    for i in (1, 2, 3):
        conversation.variables["step"] = i
        outcome = Outcome(replies=[Reply(f"r{i}")], tool_runs=[_run(i)])
        stage_message(rows, _event(event_id=str(i)), outcome, conversation, contact, 1.0)
    receipt = StatusEvent("c1", "t1", "wamid.1", DeliveryStatus.READ, 1.0, "chat-7")
    rows.statuses.append((("delivery", "r"), receipt))
    part = rows.subset({("c1", "2"), ("delivery", "r")})
    assert list(part.events) == [("c1", "2")]
    assert [r.request for _, _, _, r in part.tool_runs] == [{"n": 2}]
    assert [conv[10] for _, _, conv in part.states] == ['{"step":2}']
    assert [h.text for _, h in part.history] == ["hello", "r2"]
    assert [s for _, s in part.statuses] == [receipt]
    assert rows.subset(set()) == FlushRows()


def test_the_reason_names_the_error_and_its_sqlstate() -> None:
    refused = asyncpg.exceptions.UntranslatableCharacterError("unsupported Unicode escape sequence")
    assert _reason(refused) == (
        "database refused the rows: UntranslatableCharacterError [22P05]: unsupported Unicode escape sequence"
    )
    assert _reason(ValueError("bad")) == "database refused the rows: ValueError: bad"
    assert len(_reason(ValueError("x" * 1000))) == 500
