"""Staging one handled message into flush rows: pure, deterministic, snapshotting state."""

from __future__ import annotations

from engine.models import (
    Button,
    ChannelType,
    Contact,
    Conversation,
    ConversationCommand,
    InboundEvent,
    MessageType,
    Outcome,
    Reply,
    ToolRun,
)
from engine.store.messages import FlushRows
from engine.worker.staging import stage_command, stage_message


def _event(**kw: object) -> InboundEvent:
    base: dict[str, object] = {
        "channel_id": "c1",
        "tenant_id": "t1",
        "channel_type": ChannelType.TELEGRAM,
        "event_id": "42",
        "conversation_key": "chat-7",
        "contact_key": "user-7",
        "type": MessageType.TEXT,
        "timestamp": 1.0,
        "text": "hello",
    }
    return InboundEvent(**{**base, **kw})  # type: ignore[arg-type]


def _state() -> tuple[Conversation, Contact]:
    return Conversation("conv-1", "t1", "c1", "k1", "chat-7"), Contact("k1", "t1", "c1", "user-7")


def test_a_message_stages_its_inbound_row_replies_in_order_tool_runs_and_state() -> None:
    rows = FlushRows()
    conversation, contact = _state()
    outcome = Outcome(
        replies=[Reply("one", (Button("b", "B"),)), Reply("two")],
        tool_runs=[ToolRun("run-1", "lookup", "ok", 1, 2.0, {}, {}, None)],
        errors=["step bound reached"],
    )
    stage_message(rows, _event(), outcome, conversation, contact, now=100.0)

    key = ("c1", "42")
    assert rows.events == {key: "conv-1"}
    directions = [(h.direction, h.text) for _, h in rows.history]
    assert directions == [("inbound", "hello"), ("outbound", "one"), ("outbound", "two")]
    assert rows.history[0][1].payload["errors"] == ["step bound reached"]
    replies = [m for _, m, _ in rows.outbound]
    assert [r.text for r in replies] == ["one", "two"]
    assert replies[0].created_at < replies[1].created_at  # the sender keeps this order
    assert all(history_id for _, _, history_id in rows.outbound)
    assert [(k, run.id) for k, _, _, run in rows.tool_runs] == [(key, "run-1")]
    assert [(key, contact[0], conv[0]) for key, contact, conv in rows.states] == [(key, "k1", "conv-1")]


def test_staging_the_same_event_twice_gives_the_same_ids() -> None:
    first, second = FlushRows(), FlushRows()
    for rows in (first, second):
        conversation, contact = _state()
        stage_message(rows, _event(), Outcome(replies=[Reply("hi")]), conversation, contact, now=5.0)
    assert [h.id for _, h in first.history] == [h.id for _, h in second.history]
    assert [m.id for _, m, _ in first.outbound] == [m.id for _, m, _ in second.outbound]


def test_a_telegram_button_press_is_answered_before_the_replies() -> None:
    rows = FlushRows()
    conversation, contact = _state()
    event = _event(type=MessageType.BUTTON, payload="yes", reply_to={"callback_query_id": "cb-1", "chat_id": 7})
    stage_message(rows, event, Outcome(replies=[Reply("ok")]), conversation, contact, now=1.0)
    kinds = [m.kind for _, m, _ in rows.outbound]
    assert kinds == ["answer_callback", "message"]
    assert [history_id is None for _, _, history_id in rows.outbound] == [True, False]


def test_state_is_snapshotted_when_staged() -> None:
    rows = FlushRows()
    conversation, contact = _state()
    conversation.variables["step"] = 1
    stage_message(rows, _event(), Outcome(), conversation, contact, now=1.0)
    conversation.variables["step"] = 2  # a later message of the same conversation
    assert '"step":1' in rows.states[0][2][10]


def test_close_command_clears_the_flow_and_stages_the_status() -> None:
    rows = FlushRows()
    conversation, contact = _state()
    conversation.flow_id, conversation.node_id, conversation.flow_version = "f", "n", 3
    command = ConversationCommand("c1", "t1", "chat-7", "close", 1.0)
    stage_command(rows, ("command", "1"), command, conversation, contact, now=1.0)
    staged = rows.states[0][2]
    assert staged[6] == "closed" and staged[7] is None and staged[8] is None and staged[9] is None


def test_a_subset_keeps_only_the_rows_of_its_deliveries_and_their_last_state() -> None:
    rows = FlushRows()
    conversation, contact = _state()
    for i in (1, 2, 3):
        conversation.variables["step"] = i
        stage_message(rows, _event(event_id=str(i)), Outcome(replies=[Reply(f"r{i}")]), conversation, contact, 1.0)
    part = rows.subset({("c1", "1"), ("c1", "3")})
    assert list(part.events) == [("c1", "1"), ("c1", "3")]
    assert [m.text for _, m, _ in part.outbound] == ["r1", "r3"]
    assert [conv[10] for _, _, conv in part.states] == ['{"step":1}', '{"step":3}']
