"""The flow interpreter: run a conversation's flow for one inbound message.

State lives in models.Conversation and is mutated in place: flow_id and flow_version (the version
the conversation started on, kept when the flow is edited), node_id (the ask node waiting for an
answer), variables. One small function per node type returns the next node id, WAIT (an ask node
waits for the next message), a Jump to another flow, or None (the flow ends). A bound on the steps
per inbound message stops loops, with the error in Outcome.errors.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from engine.brain.flows import answers, expressions, templates
from engine.brain.flows import flow_models as d
from engine.brain.flows.faq import FaqIndex
from engine.models import Button, Contact, Conversation, InboundEvent, Outcome, Reply, ToolRun

RETRIES = "_retries"  # reserved variable: invalid answers so far at the waiting ask node


@dataclass(frozen=True, slots=True)
class Flow:
    id: str
    version: int
    bot_id: str
    slug: str
    start: str
    nodes: dict[str, Any]  # node id -> definitions node model (validated, frozen)

    @classmethod
    def of(cls, flow_id: str, version: int, bot_id: str, definition: d.FlowDef) -> Flow:
        nodes = {n.id: n for n in definition.nodes}
        return cls(flow_id, version, bot_id, definition.slug, definition.start_node, nodes)


class FlowEnv(Protocol):
    max_steps: int

    async def flow(self, flow_id: str, version: int) -> Flow | None: ...

    def latest(self, bot_id: str, slug: str) -> Flow | None: ...

    def faqs(self, bot_id: str) -> FaqIndex | None: ...

    async def call_tool(self, turn: Turn, name: str, args: dict[str, Any], step: str) -> tuple[ToolRun, Any]: ...


@dataclass(slots=True)
class Turn:
    """One inbound message going through the flows."""

    env: FlowEnv
    event: InboundEvent
    conversation: Conversation
    contact: Contact
    outcome: Outcome
    steps: int = 0

    def resolve(self, path: tuple[str, ...]) -> Any:
        head, rest = path[0], path[1:]
        if head == "message":
            e = self.event
            root: Any = {"text": e.text or "", "payload": e.payload, "type": e.type.value}
        elif head == "contact":
            c = self.contact
            root = {**c.attributes, "name": c.name or "", "id": c.id, "key": c.key}
        else:
            root, rest = self.conversation.variables, path
        return templates.lookup(root, rest)

    def render(self, template: str) -> str:
        return templates.render(template, self.resolve)

    def say(self, text: str, buttons: tuple[Button, ...] = ()) -> None:
        self.outcome.replies.append(Reply(text=text, buttons=buttons))


@dataclass(frozen=True, slots=True)
class Jump:
    flow: Flow
    node: str


class _Wait:
    pass


WAIT = _Wait()
Step = str | Jump | _Wait | None


async def start(turn: Turn, flow: Flow, node: str | None = None) -> None:
    """Start (or restart) a flow at its start node or at node, and run until it waits or ends."""
    _enter(turn.conversation, flow)
    await _run(turn, flow, node or flow.start)


async def resume(turn: Turn) -> None:
    """Continue the conversation's flow: answer the waiting ask node, or run from node_id."""
    conv = turn.conversation
    assert conv.flow_id is not None
    assert conv.flow_version is not None
    flow = await turn.env.flow(conv.flow_id, conv.flow_version)
    if flow is None or conv.node_id not in flow.nodes:
        turn.outcome.errors.append(f"flow {conv.flow_id} v{conv.flow_version}: not found, conversation reset")
        finish(conv)
        return
    node = flow.nodes[conv.node_id]
    if isinstance(node, d.AskNode):
        turn.steps += 1
        outcome = _answer(turn, node)
        if outcome is WAIT:
            return
        await _run(turn, flow, outcome)  # type: ignore[arg-type]
    else:
        await _run(turn, flow, node.id)


def finish(conv: Conversation) -> None:
    conv.flow_id = conv.flow_version = conv.node_id = None
    conv.variables.pop(RETRIES, None)


def _enter(conv: Conversation, flow: Flow) -> None:
    conv.flow_id, conv.flow_version, conv.node_id = flow.id, flow.version, None
    conv.variables.pop(RETRIES, None)


async def _run(turn: Turn, flow: Flow, node_id: str | None) -> None:
    conv = turn.conversation
    while node_id is not None:
        turn.steps += 1
        if turn.steps > turn.env.max_steps:
            turn.outcome.errors.append(
                f"flow {flow.slug} v{flow.version}: stopped after {turn.env.max_steps} steps at node {node_id}"
            )
            finish(conv)
            return
        node = flow.nodes[node_id]
        conv.node_id = node_id
        step = await HANDLERS[node.type](turn, flow, node)
        if step is WAIT:
            return
        if isinstance(step, Jump):
            flow = step.flow
            _enter(conv, flow)
            node_id = step.node
        else:
            node_id = step  # type: ignore[assignment]
    finish(conv)  # no next node: the flow is over


# --- one function per node type --------------------------------------------------------------------


async def _message(turn: Turn, flow: Flow, node: d.MessageNode) -> Step:
    turn.say(turn.render(node.text), tuple(Button(b.id, turn.render(b.title)) for b in node.buttons))
    return node.next


def _ask_buttons(turn: Turn, node: d.AskNode) -> tuple[Button, ...]:
    if node.buttons:
        return tuple(Button(b.id, turn.render(b.title)) for b in node.buttons)
    return tuple(Button(c.id, c.title) for c in node.validate_.choices)


async def _ask(turn: Turn, flow: Flow, node: d.AskNode) -> Step:
    turn.say(turn.render(node.prompt), _ask_buttons(turn, node))
    turn.conversation.variables[RETRIES] = 0
    return WAIT


def _answer(turn: Turn, node: d.AskNode) -> Step:
    variables = turn.conversation.variables
    ok, value = answers.check(node.validate_, turn.event.text, turn.event.payload)
    if ok:
        variables[node.var] = value
        variables.pop(RETRIES, None)
        return node.next
    failures = int(variables.get(RETRIES) or 0) + 1
    if failures > node.retries:
        variables.pop(RETRIES, None)
        return node.fallback
    variables[RETRIES] = failures
    prompt = (
        turn.render(node.retry_prompt) if node.retry_prompt else f"Sorry, I didn't get that. {turn.render(node.prompt)}"
    )
    turn.say(prompt, _ask_buttons(turn, node))
    return WAIT


async def _condition(turn: Turn, flow: Flow, node: d.ConditionNode) -> Step:
    for i, branch in enumerate(node.branches):
        try:
            hit = expressions.truthy(expressions.evaluate(expressions.parse(branch.when), turn.resolve))
        except expressions.ExpressionError as exc:
            # Only a pattern read from a variable gets here (saved expressions parse): the node's
            # error, recorded, and the branch does not hold; never an exception that dead-letters.
            turn.outcome.errors.append(f"flow {flow.slug}: condition at node {node.id}: branches[{i}]: {exc}")
            continue
        if hit:
            return branch.next
    return node.else_


async def _set(turn: Turn, flow: Flow, node: d.SetNode) -> Step:
    for name, value in node.values.items():
        turn.conversation.variables[name] = templates.render_value(value, turn.resolve)
    return node.next


async def _tool(turn: Turn, flow: Flow, node: d.ToolNode) -> Step:
    args = templates.render_value(node.args, turn.resolve)
    run, value = await turn.env.call_tool(turn, node.tool, args, f"{flow.id}:{node.id}:{turn.steps}")
    turn.outcome.tool_runs.append(run)
    if node.var:
        turn.conversation.variables[node.var] = value if run.status == "ok" else None
    if run.status == "ok":
        return node.next
    if node.error is None:
        turn.outcome.errors.append(f"flow {flow.slug}: tool {node.tool} at node {node.id}: {run.error}")
    return node.error


async def _faq(turn: Turn, flow: Flow, node: d.FaqNode) -> Step:
    index = turn.env.faqs(flow.bot_id)
    hit = index.best(turn.event.text or "", node.threshold) if index else None
    if hit is not None:
        turn.say(hit[0].answer)
        if node.var:
            turn.conversation.variables[node.var] = hit[0].answer
        return node.next
    return _missed(turn, node)


async def _kb_search(turn: Turn, flow: Flow, node: d.KbSearchNode) -> Step:
    args = {"query": turn.render(node.query), "limit": node.limit, "language": node.language}
    run, hits = await turn.env.call_tool(turn, "kb_search", args, f"{flow.id}:{node.id}:{turn.steps}")
    turn.outcome.tool_runs.append(run)
    hits = hits or []
    if node.var:
        turn.conversation.variables[node.var] = hits
    if hits:
        if node.reply:
            turn.say(f"{hits[0]['title']}: {hits[0]['snippet']}")
        return node.next
    return _missed(turn, node)


def _missed(turn: Turn, node: d.FaqNode | d.KbSearchNode) -> Step:
    """No answer found: follow the miss edge, else say miss_text (if any) and go on."""
    if node.miss is not None:
        return node.miss
    if node.miss_text:
        turn.say(turn.render(node.miss_text))
    return node.next


async def _handoff(turn: Turn, flow: Flow, node: d.HandoffNode) -> Step:
    hand_off(turn, node.queue, turn.render(node.text) if node.text else None)
    return None


def hand_off(turn: Turn, queue: str, text: str | None) -> None:
    """The conversation goes to a human queue; the bot stays silent until it is handed back."""
    conv = turn.conversation
    conv.status = "human"
    tag = f"queue:{queue}"
    if tag not in conv.tags:
        conv.tags.append(tag)
    finish(conv)
    if text:
        turn.say(text)


async def _goto(turn: Turn, flow: Flow, node: d.GotoNode) -> Step:
    target = turn.env.latest(flow.bot_id, node.flow)
    if target is None:
        turn.outcome.errors.append(f"flow {flow.slug}: goto {node.flow}: no such flow")
        return None
    return Jump(target, node.node or target.start)


async def _end(turn: Turn, flow: Flow, node: d.EndNode) -> Step:
    if node.text:
        turn.say(turn.render(node.text))
    return None


HANDLERS: dict[str, Callable[[Turn, Flow, Any], Awaitable[Step]]] = {
    "message": _message,
    "ask": _ask,
    "condition": _condition,
    "set": _set,
    "tool": _tool,
    "faq": _faq,
    "kb_search": _kb_search,
    "handoff": _handoff,
    "goto": _goto,
    "end": _end,
}
