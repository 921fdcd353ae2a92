"""One inbound message through the brain: route, apply the actions, run or resume the flow.

Semantics (see also engine.brain.routing):
- Tags and contact attributes of every matched rule apply. `drop` discards everything else.
- A reply, a handoff or a start_flow action owns the message: the current flow does not see it,
  except that a start_flow (without a node) of the flow the conversation is already in continues it.
- Otherwise the conversation's flow continues (an ask node gets its answer), or the bot's default
  flow starts, or, for a bot without one, the greeting/echo reply of the spine.
- A conversation with status `human` gets no flow and no fallback: the bot is silent until handed
  back (status set to `bot` by whoever handles the queue). Explicit rule actions still apply, so a
  rule can, say, tag those messages. A `closed` conversation that gets a message starts afresh.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from engine.brain.compiled_tenant import TenantState
from engine.brain.flows import interpreter
from engine.brain.flows.faq import FaqIndex
from engine.brain.flows.interpreter import Flow, Turn
from engine.brain.routing import compiled as c
from engine.brain.routing.message import Message
from engine.brain.tools.runner import CallContext
from engine.models import Contact, Conversation, InboundEvent, MessageType, Outcome, Reply, ToolRun

FlowVersions = Callable[[str, int], Awaitable[Flow | None]]


class Env:
    """What the interpreter may use: this tenant's snapshot, every flow version, tools."""

    def __init__(self, state: TenantState, flow_versions: FlowVersions, max_steps: int) -> None:
        self.state = state
        self.flow_versions = flow_versions
        self.max_steps = max_steps

    async def flow(self, flow_id: str, version: int) -> Flow | None:
        return await self.flow_versions(flow_id, version)

    def latest(self, bot_id: str, slug: str) -> Flow | None:
        return self.state.flows_by_slug.get((bot_id, slug))

    def faqs(self, bot_id: str) -> FaqIndex | None:
        return self.state.faqs.get(bot_id)

    async def call_tool(self, turn: Turn, name: str, args: dict[str, Any], step: str) -> tuple[ToolRun, Any]:
        conv = turn.conversation
        key = f"{turn.event.idempotency_key}:{step}"
        ctx = CallContext(conv.tenant_id, conv.bot_id, conv.id, turn.contact.id, key)
        return await self.state.toolbox.call(name, args, ctx)


def greeting(state: TenantState | None, event: InboundEvent, conversation: Conversation, contact: Contact) -> Reply:
    """The spine's reply, kept for bots without a default flow."""
    bot = state.bots.get(conversation.bot_id or "") if state else None
    welcome, echo = (bot.welcome_text, bot.echo) if bot else ("Hello {name}!", True)
    text = welcome.replace("{name}", contact.name or "there")
    if echo and event.type is MessageType.TEXT and event.text:
        text = f"{text} You said: {event.text}"
    return Reply(text=text)


async def run_turn(
    state: TenantState | None,
    flow_versions: FlowVersions,
    max_steps: int,
    event: InboundEvent,
    conversation: Conversation,
    contact: Contact,
) -> Outcome:
    """Route the message, apply the actions, run or resume the flow; mutates the conversation and
    contact in place and returns the replies, tool runs and errors."""
    out = Outcome()
    if conversation.bot_id is None and state is not None:
        conversation.bot_id = state.channels.get(event.channel_id, ("", None))[1]
    if state is None:
        out.replies.append(greeting(state, event, conversation, contact))
        return out
    if conversation.status == "closed":
        conversation.status = "bot"
        interpreter.finish(conversation)
    decision = state.router.route(Message.of(event, conversation, contact))
    turn = Turn(Env(state, flow_versions, max_steps), event, conversation, contact, out)
    start = _apply(turn, decision)
    if start is not None:
        flow = state.flows_by_slug.get((start.bot_id, start.flow_slug))
        if flow is None:
            out.errors.append(f"start_flow: bot {start.bot_id} has no flow {start.flow_slug!r}")
        elif flow.id == conversation.flow_id and start.node is None:
            await interpreter.resume(turn)  # already in it: "my order is 12345" answers, not restarts
        else:
            conversation.bot_id = start.bot_id
            await interpreter.start(turn, flow, start.node)
    elif decision.terminal or conversation.status == "human":
        pass
    elif conversation.flow_id is not None:
        await interpreter.resume(turn)
    elif (flow := state.default_flow(conversation.bot_id)) is not None:
        await interpreter.start(turn, flow)
    else:
        out.replies.append(greeting(state, event, conversation, contact))
    return out


def _apply(turn: Turn, decision: c.Decision) -> c.StartFlowAction | None:
    """Apply the decision's actions in order; returns the flow to start, if any."""
    conv, contact = turn.conversation, turn.contact
    dropped = any(isinstance(a, c.DropAction) for a in decision.actions)
    start: c.StartFlowAction | None = None
    for action in decision.actions:
        if isinstance(action, c.TagAction):
            conv.tags.extend(t for t in action.tags if t not in conv.tags)
        elif isinstance(action, c.SetAttributes):
            contact.attributes.update({k: turn.render(v) if isinstance(v, str) else v for k, v in action.values})
        elif dropped:
            continue
        elif isinstance(action, c.ReplyTemplate):
            turn.say(turn.render(action.text), action.buttons)
        elif isinstance(action, c.HandoffAction):
            interpreter.hand_off(turn, action.queue, turn.render(action.text) if action.text else None)
        elif isinstance(action, c.StartFlowAction) and start is None and conv.status != "human":
            start = action
    return start
