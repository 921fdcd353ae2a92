"""What the flow interpreter promises beyond the happy paths of test_flows: buttons rendered and kept
on a re-prompt, the reserved retry counter never left in the conversation's variables, the step bound
exact, a tool's or kb_search's result stored as documented, nodes without optional fields."""

from __future__ import annotations

from typing import Any

from engine.brain.flows import interpreter
from engine.brain.flows.interpreter import RETRIES
from engine.models import Button, Contact
from tests.unit.test_flows import Chat, FakeEnv, make_flow, texts


async def test_buttons_are_rendered_and_an_ask_keeps_them_on_its_reprompt() -> None:
    flow = make_flow([
        {"id": "hi", "type": "message", "text": "Hi", "buttons": [{"id": "m", "title": "Menu for {{contact.name}}"}],
         "next": "ask"},
        {"id": "ask", "type": "ask", "prompt": "Size?", "var": "size", "buttons": [{"id": "s", "title": "S {{contact.name}}"}],
         "validate": {"kind": "choice", "choices": ["s", "m"]}, "next": "pick"},
        {"id": "pick", "type": "ask", "prompt": "Colour?", "var": "colour",
         "validate": {"kind": "choice", "choices": [{"id": "r", "title": "Red"}]}, "next": "done"},
        {"id": "done", "type": "end"},
    ])  # fmt: skip
    chat = Chat(FakeEnv())
    out = await chat.send("go", start=flow)
    assert [r.buttons for r in out.replies] == [(Button("m", "Menu for Ana"),), (Button("s", "S Ana"),)]
    out = await chat.send("xl")  # not a choice: re-prompted with the same buttons
    assert out.replies[0].buttons == (Button("s", "S Ana"),)
    out = await chat.send("s")
    assert out.replies[0].buttons == (Button("r", "Red"),)  # without buttons of its own: the choices
    out = await chat.send("blue")
    assert out.replies[0].buttons == (Button("r", "Red"),)


async def test_the_retry_counter_never_stays_in_the_variables() -> None:
    flow = make_flow([
        {"id": "ask", "type": "ask", "prompt": "Number?", "var": "n", "validate": {"kind": "number"}, "retries": 1,
         "next": "again", "fallback": "again"},
        {"id": "again", "type": "ask", "prompt": "Again?", "var": "m", "validate": {"kind": "number"}, "retries": 0,
         "next": "bye", "fallback": "bye"},
        {"id": "bye", "type": "message", "text": "bye"},
    ])  # fmt: skip
    chat = Chat(FakeEnv())
    await chat.send("go", start=flow)
    assert chat.conv.variables[RETRIES] == 0
    await chat.send("x")
    assert chat.conv.variables[RETRIES] == 1
    await chat.send("4")  # answered: the next ask starts its own count
    assert (chat.conv.variables["n"], chat.conv.variables[RETRIES]) == (4, 0)
    await chat.send("y")  # no retries left: the fallback edge, and the counter goes
    assert RETRIES not in chat.conv.variables
    assert chat.conv.flow_id is None

    chat = Chat(FakeEnv())
    await chat.send("go", start=flow)
    await chat.send("x")  # counter at 1 ...
    await chat.send("go", start=make_flow([{"id": "ask", "type": "ask", "prompt": "Other?", "var": "o"}], slug="other"))
    assert chat.conv.variables[RETRIES] == 0  # ... a new flow starts its own count
    await chat.send("anything")  # a text answer ends that flow
    assert RETRIES not in chat.conv.variables


async def test_the_step_bound_is_exact() -> None:
    nodes: list[dict[str, Any]] = [
        {"id": f"n{i}", "type": "set", "values": {"i": i}, "next": f"n{i + 1}"} for i in range(4)
    ]
    nodes.append({"id": "n4", "type": "end", "text": "done"})  # five steps in all
    chat = Chat(FakeEnv(max_steps=5))
    assert texts(await chat.send("go", start=make_flow(nodes))) == ["done"]
    chat = Chat(FakeEnv(max_steps=4))
    out = await chat.send("go", start=make_flow(nodes))
    assert out.errors == ["flow main v1: stopped after 4 steps at node n4"]

    # Answering an ask node is a step too.
    asked = [{"id": "ask", "type": "ask", "prompt": "?", "var": "a", "next": "n0"}, *nodes]
    chat = Chat(FakeEnv(max_steps=6))
    await chat.send("go", start=make_flow(asked))
    assert texts(await chat.send("yes")) == ["done"]
    chat = Chat(FakeEnv(max_steps=5))
    await chat.send("go", start=make_flow(asked))
    assert (await chat.send("yes")).errors == ["flow main v1: stopped after 5 steps at node n4"]


async def test_resume_from_a_node_that_is_not_waiting_runs_on_from_it() -> None:
    flow = make_flow([
        {"id": "a", "type": "message", "text": "a", "next": "b"},
        {"id": "b", "type": "message", "text": "b {{message.text}}"},
    ])  # fmt: skip
    env = FakeEnv(flow)
    chat = Chat(env)
    chat.conv.flow_id, chat.conv.flow_version, chat.conv.node_id = flow.id, flow.version, "b"
    assert texts(await chat.send(None, payload="x")) == ["b "]  # a button press has no text: empty, not a placeholder
    assert chat.conv.flow_id is None


async def test_tool_and_kb_results_are_stored_as_documented() -> None:
    flow = make_flow([
        {"id": "t", "type": "tool", "tool": "broken", "args": {}, "var": "res", "next": "k", "error": "k"},
        {"id": "k", "type": "kb_search", "query": "{{message.text}}", "var": "hits", "next": "f", "miss": "f"},
        {"id": "f", "type": "faq", "var": "answer", "next": "h", "miss": "h"},
        {"id": "h", "type": "handoff", "queue": "q"},
    ])  # fmt: skip
    hits = [{"title": "T", "snippet": "S"}]
    env = FakeEnv(tools={"broken": lambda args: ("error", {"partial": True}), "kb_search": lambda args: ("ok", hits)})
    chat = Chat(env)
    out = await chat.send("how long does shipping take", start=flow)
    assert chat.conv.variables["res"] is None  # a failed tool leaves no value behind
    assert chat.conv.variables["hits"] == hits
    assert chat.conv.variables["answer"] == "Two to four days."
    assert [r.tool_name for r in out.tool_runs] == ["broken", "kb_search"]
    assert [step.split(":")[1] for _, _, step in env.calls] == ["t", "k"]  # the step names the node
    assert texts(out) == ["T: S", "Two to four days."]  # the handoff has no text: nothing more is said
    assert chat.conv.status == "human"


async def test_a_goto_to_no_flow_is_recorded_and_a_bot_without_faqs_misses() -> None:
    class NoFaqs(FakeEnv):
        def faqs(self, bot_id: str) -> None:
            return None

    flow = make_flow([
        {"id": "f", "type": "faq", "next": "g", "miss_text": "no idea"},
        {"id": "g", "type": "goto", "flow": "nowhere"},
    ])  # fmt: skip
    chat = Chat(NoFaqs())
    out = await chat.send("shipping?", start=flow)
    assert texts(out) == ["no idea"]
    assert out.errors == ["flow main: goto nowhere: no such flow"]


async def test_the_documented_template_names_resolve() -> None:
    flow = make_flow([
        {"id": "m", "type": "message",
         "text": "{{message.type}} {{message.payload}} {{contact.id}} {{contact.key}} [{{contact.name}}]"},
    ])  # fmt: skip
    chat = Chat(FakeEnv())
    chat.contact = Contact("contact-1", "tenant-1", "ch-1", "u1")  # no name
    assert texts(await chat.send(None, payload="yes", start=flow)) == ["button yes contact-1 u1 []"]


async def test_a_faq_node_uses_its_own_threshold() -> None:
    """This question scores 1/3 against "How long does shipping take?": under the default 0.5."""
    strict = make_flow([{"id": "f", "type": "faq", "threshold": 0.2, "miss_text": "no idea"}])
    chat = Chat(FakeEnv())
    assert texts(await chat.send("shipping costs abroad please", start=strict)) == ["Two to four days."]
    default = make_flow([{"id": "f", "type": "faq", "miss_text": "no idea"}], slug="default")
    assert texts(await chat.send("shipping costs abroad please", start=default)) == ["no idea"]


async def test_a_branch_whose_pattern_is_unusable_is_recorded_and_the_next_branch_is_tried() -> None:
    flow = make_flow([
        {"id": "s", "type": "set", "values": {"pat": "("}, "next": "c"},
        {"id": "c", "type": "condition", "branches": [{"when": "message.text matches pat", "next": "a"},
                                                      {"when": "1 == 1", "next": "b"}], "else": "a"},
        {"id": "a", "type": "message", "text": "a"},
        {"id": "b", "type": "message", "text": "b"},
    ])  # fmt: skip
    chat = Chat(FakeEnv())
    out = await chat.send("((", start=flow)
    assert texts(out) == ["b"]
    assert len(out.errors) == 1
    assert out.errors[0].startswith("flow main: condition at node c: branches[0]: ")


def test_finishing_a_flow_drops_the_retry_counter() -> None:
    chat = Chat(FakeEnv())
    chat.conv.flow_id, chat.conv.flow_version, chat.conv.node_id = "f", 1, "ask"
    chat.conv.variables.update({RETRIES: 1, "kept": True})
    interpreter.finish(chat.conv)  # e.g. a handoff rule while the conversation waits at an ask node
    assert chat.conv.variables == {"kept": True}
    assert (chat.conv.flow_id, chat.conv.flow_version, chat.conv.node_id) == (None, None, None)
