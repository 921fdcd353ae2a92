from __future__ import annotations

import time
from typing import Any

import pytest

from engine.brain.flows import interpreter
from engine.brain.flows.faq import FaqIndex
from engine.brain.flows.flow_models import FlowDef
from engine.brain.flows.interpreter import Flow, Turn
from engine.models import ChannelType, Contact, Conversation, InboundEvent, MessageType, Outcome, ToolRun

BOT = "bot-1"


def make_flow(nodes: list[dict[str, Any]], slug: str = "main", version: int = 1, **kw: Any) -> Flow:
    definition = FlowDef.model_validate({"bot": "shop", "slug": slug, "nodes": nodes, **kw})
    return Flow.of(f"flow-{slug}", version, BOT, definition)


class FakeEnv:
    def __init__(self, *flows: Flow, max_steps: int = 50, tools: dict[str, Any] | None = None) -> None:
        self.max_steps = max_steps
        self.versions = {(f.id, f.version): f for f in flows}
        self.tools = tools or {}
        self.calls: list[tuple[str, dict[str, Any], str]] = []
        self.faq = FaqIndex.build([
            ("How long does shipping take?", "Two to four days.", ["delivery time"]),
            ("Can I return an item?", "Yes, within 30 days.", ["refund"]),
        ])  # fmt: skip

    def add(self, flow: Flow) -> None:
        self.versions[(flow.id, flow.version)] = flow

    async def flow(self, flow_id: str, version: int) -> Flow | None:
        return self.versions.get((flow_id, version))

    def latest(self, bot_id: str, slug: str) -> Flow | None:
        found = [f for f in self.versions.values() if f.slug == slug and f.bot_id == bot_id]
        return max(found, key=lambda f: f.version, default=None)

    def faqs(self, bot_id: str) -> FaqIndex | None:
        return self.faq

    async def call_tool(self, turn: Turn, name: str, args: dict[str, Any], step: str) -> tuple[ToolRun, Any]:
        self.calls.append((name, args, step))
        status, value = self.tools[name](args)
        run = ToolRun(f"run-{step}", name, status, 1, 1.0, {"args": args}, None, None if status == "ok" else "boom")
        return run, value


class Chat:
    """A conversation driven message by message through the interpreter."""

    def __init__(self, env: FakeEnv) -> None:
        self.env = env
        self.conv = Conversation("conv-1", "tenant-1", "ch-1", "contact-1", "chat-1", bot_id=BOT)
        self.contact = Contact("contact-1", "tenant-1", "ch-1", "u1", name="Ana")
        self.n = 0

    def event(self, text: str | None, payload: str | None = None) -> InboundEvent:
        self.n += 1
        return InboundEvent(
            "ch-1", "tenant-1", ChannelType.TELEGRAM, f"ev-{self.n}", "chat-1", "u1",
            MessageType.BUTTON if payload else MessageType.TEXT, time.time(), text=text, payload=payload,
        )  # fmt: skip

    async def send(self, text: str | None, payload: str | None = None, start: Flow | None = None) -> Outcome:
        out = Outcome()
        turn = Turn(self.env, self.event(text, payload), self.conv, self.contact, out)  # type: ignore[arg-type]
        if start is not None:
            self.env.add(start)
            await interpreter.start(turn, start)
        else:
            await interpreter.resume(turn)
        return out


def texts(out: Outcome) -> list[str]:
    return [r.text for r in out.replies]


ORDER_FLOW = [
    {"id": "greet", "type": "message", "text": "Hi {{contact.name}}!", "next": "ask"},
    {"id": "ask", "type": "ask", "prompt": "Your order number?", "var": "order",
     "validate": {"kind": "regex", "pattern": r"\d{5}"}, "retries": 1, "next": "lookup", "fallback": "human"},
    {"id": "lookup", "type": "tool", "tool": "order_status", "args": {"number": "{{order}}"}, "var": "result",
     "next": "tell", "error": "sorry"},
    {"id": "tell", "type": "message", "text": "Order {{order}} is {{result.status}}."},
    {"id": "sorry", "type": "end", "text": "Our order system is down."},
    {"id": "human", "type": "handoff", "queue": "orders", "text": "An agent will help you."},
]  # fmt: skip


async def test_multi_turn_with_validation_reprompt_and_tool() -> None:
    env = FakeEnv(tools={"order_status": lambda args: ("ok", {"status": "shipped"})})
    chat = Chat(env)
    out = await chat.send("hello", start=make_flow(ORDER_FLOW))
    assert texts(out) == ["Hi Ana!", "Your order number?"]
    assert (chat.conv.flow_id, chat.conv.flow_version, chat.conv.node_id) == ("flow-main", 1, "ask")
    out = await chat.send("abc")
    assert texts(out) == ["Sorry, I didn't get that. Your order number?"]
    out = await chat.send("12345")
    assert texts(out) == ["Order 12345 is shipped."]
    assert env.calls[0][:2] == ("order_status", {"number": "12345"})
    assert [r.tool_name for r in out.tool_runs] == ["order_status"]
    assert chat.conv.flow_id is None  # the flow ended
    assert chat.conv.variables["result"] == {"status": "shipped"}


async def test_too_many_invalid_answers_take_the_fallback_edge() -> None:
    chat = Chat(FakeEnv())
    await chat.send("hi", start=make_flow(ORDER_FLOW))
    await chat.send("no")
    out = await chat.send("still no")
    assert texts(out) == ["An agent will help you."]
    assert chat.conv.status == "human"
    assert "queue:orders" in chat.conv.tags
    assert chat.conv.flow_id is None


async def test_tool_error_edge() -> None:
    chat = Chat(FakeEnv(tools={"order_status": lambda args: ("error", None)}))
    await chat.send("hi", start=make_flow(ORDER_FLOW))
    out = await chat.send("12345")
    assert texts(out) == ["Our order system is down."]
    assert out.tool_runs[0].status == "error"
    assert out.errors == []


async def test_tool_error_without_edge_is_recorded() -> None:
    flow = make_flow(
        [{"id": "t", "type": "tool", "tool": "x", "next": "m"}, {"id": "m", "type": "message", "text": "no"}]
    )
    out = await Chat(FakeEnv(tools={"x": lambda a: ("timeout", None)})).send("go", start=flow)
    assert texts(out) == []
    assert "tool x at node t: boom" in out.errors[0]


async def test_condition_set_and_choice() -> None:
    flow = make_flow([
        {"id": "menu", "type": "ask", "prompt": "Pick", "var": "pick",
         "validate": {"kind": "choice", "choices": [{"id": "orders", "title": "My orders", "synonyms": ["pedido"]},
                                                     "help"]}, "next": "route"},
        {"id": "route", "type": "condition", "branches": [{"when": "pick == 'orders'", "next": "set"}], "else": "h"},
        {"id": "set", "type": "set", "values": {"count": "{{pick}}", "n": 3}, "next": "show"},
        {"id": "show", "type": "message", "text": "{{count}} x{{n}}"},
        {"id": "h", "type": "message", "text": "help!"},
    ])  # fmt: skip
    chat = Chat(FakeEnv())
    out = await chat.send("hi", start=flow)
    assert [b.id for b in out.replies[0].buttons] == ["orders", "help"]
    assert texts(await chat.send("PEDIDO")) == ["orders x3"]  # a synonym, any case
    await chat.send("hi", start=flow)
    assert texts(await chat.send(None, payload="help")) == ["help!"]  # a button press


async def test_number_email_and_phone_answers() -> None:
    flow = make_flow([
        {"id": "a", "type": "ask", "prompt": "qty", "var": "qty", "validate": {"kind": "number", "min": 1, "max": 9},
         "next": "b"},
        {"id": "b", "type": "ask", "prompt": "mail", "var": "mail", "validate": {"kind": "email"}, "next": "c"},
        {"id": "c", "type": "ask", "prompt": "phone", "var": "phone", "validate": {"kind": "phone"}, "next": "d"},
        {"id": "d", "type": "message", "text": "{{qty}} {{mail}} {{phone}}"},
    ])  # fmt: skip
    chat = Chat(FakeEnv())
    await chat.send("x", start=flow)
    assert texts(await chat.send("12")) == ["Sorry, I didn't get that. qty"]
    assert texts(await chat.send("3")) == ["mail"]
    assert texts(await chat.send("not-an-email")) == ["Sorry, I didn't get that. mail"]
    assert texts(await chat.send("Ana@Example.com")) == ["phone"]
    assert texts(await chat.send("+34 (600) 123-456")) == ["3 ana@example.com +34600123456"]


async def test_loop_is_stopped_by_the_step_bound() -> None:
    flow = make_flow([
        {"id": "a", "type": "set", "values": {"x": 1}, "next": "b"},
        {"id": "b", "type": "condition", "branches": [{"when": "x == 1", "next": "a"}]},
    ])  # fmt: skip
    chat = Chat(FakeEnv(max_steps=20))
    out = await chat.send("go", start=flow)
    assert out.errors == ["flow main v1: stopped after 20 steps at node a"]
    assert chat.conv.flow_id is None  # reset, so the next message does not loop again


async def test_flow_edited_mid_conversation_keeps_its_version() -> None:
    v1 = make_flow([
        {"id": "ask", "type": "ask", "prompt": "Name?", "var": "who", "next": "bye"},
        {"id": "bye", "type": "message", "text": "v1 bye {{who}}"},
    ])  # fmt: skip
    env = FakeEnv(v1)
    chat = Chat(env)
    await chat.send("hi", start=v1)
    v2 = make_flow([
        {"id": "ask", "type": "ask", "prompt": "Name?", "var": "who", "next": "bye"},
        {"id": "bye", "type": "message", "text": "v2 bye {{who}}"},
    ], version=2)  # fmt: skip
    env.add(v2)
    assert texts(await chat.send("Ana")) == ["v1 bye Ana"]  # started on v1, finishes on v1
    other = Chat(env)
    other.conv.id = "conv-2"
    await other.send("hi", start=env.latest(BOT, "main"))
    assert texts(await other.send("Bo")) == ["v2 bye Bo"]


async def test_goto_faq_and_end() -> None:
    faq = make_flow([
        {"id": "q", "type": "faq", "next": "done", "miss": "nope"},
        {"id": "done", "type": "end"},
        {"id": "nope", "type": "end", "text": "I don't know that one."},
    ], slug="faq")  # fmt: skip
    main = make_flow([{"id": "go", "type": "goto", "flow": "faq"}])
    env = FakeEnv(main, faq)
    assert texts(await Chat(env).send("what is the delivery time?", start=main)) == ["Two to four days."]
    assert texts(await Chat(env).send("how long will shipping take", start=main)) == ["Two to four days."]
    assert texts(await Chat(env).send("can I pay with bitcoin", start=main)) == ["I don't know that one."]


async def test_missing_flow_version_resets_the_conversation() -> None:
    chat = Chat(FakeEnv())
    chat.conv.flow_id, chat.conv.flow_version, chat.conv.node_id = "gone", 3, "x"
    out = await chat.send("hi")
    assert "not found" in out.errors[0]
    assert chat.conv.flow_id is None


@pytest.mark.parametrize("kind", ["kb_search"])
async def test_kb_search_node_replies_with_the_best_hit(kind: str) -> None:
    flow = make_flow([{"id": "k", "type": kind, "var": "hits", "miss_text": "nothing"}])
    env = FakeEnv(tools={"kb_search": lambda a: ("ok", [{"title": "Returns", "snippet": "30 days"}])})
    chat = Chat(env)
    assert texts(await chat.send("returns?", start=flow)) == ["Returns: 30 days"]
    assert env.calls[0][1] == {"query": "returns?", "limit": 3, "language": "english"}
    env.tools["kb_search"] = lambda a: ("ok", [])
    assert texts(await chat.send("xyz", start=flow)) == ["nothing"]


def test_template_fallback_text_renders_for_a_missing_or_empty_value() -> None:
    from engine.brain.flows.templates import names, render

    values = {("contact", "name"): None, ("order",): "12345", ("empty",): ""}
    resolve = values.get
    assert render("Hi {{contact.name | there}}!", resolve) == "Hi there!"
    assert render("Order {{ order | none }} / {{empty|-}} / {{missing}}", resolve) == "Order 12345 / - / "
    assert names("{{a.b | x}} {{c}}") == [("a", "b"), ("c",)]
