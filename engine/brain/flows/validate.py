"""Graph checks that a schema cannot express: edges to missing nodes, unknown tools and flows,
expressions that do not parse, variables read before any node can set them (errors) and
unreachable nodes (warnings). Every message names the node and the field: `nodes[ask_order].next`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from engine.brain.flows import expressions, templates
from engine.brain.flows.expressions import ExpressionError
from engine.brain.flows.flow_models import FlowDef, GotoNode, ToolNode

BUILTIN_TOOLS = frozenset({"kb_search", "memory_get", "memory_set", "http_json"})
# Names that are always readable: the message and the contact are there before the first node.
ROOTS = frozenset({"message", "contact"})


def check_flow(
    flow: FlowDef,
    where: str,
    *,
    tools: Collection[str],
    sibling_flows: Mapping[str, Collection[str]],
) -> tuple[list[str], list[str]]:
    """(errors, warnings) for one flow. sibling_flows: {flow slug: node ids} of the same bot."""
    errors: list[str] = []
    nodes = {n.id: n for n in flow.nodes}
    seen: set[str] = set()
    for node in flow.nodes:
        if node.id in seen:
            errors.append(f"{where}.nodes[{node.id}].id: duplicate node id")
        seen.add(node.id)
    if flow.start is not None and flow.start not in nodes:
        errors.append(f"{where}.start: no node {flow.start!r}")
    for node in flow.nodes:
        at = f"{where}.nodes[{node.id}]"
        errors += [f"{at}.{field}: no node {target!r}" for field, target in node.edges() if target not in nodes]
        if isinstance(node, ToolNode) and node.tool not in tools and node.tool not in BUILTIN_TOOLS:
            errors.append(f"{at}.tool: unknown tool {node.tool!r}")
        if isinstance(node, GotoNode):
            if node.flow not in sibling_flows:
                errors.append(f"{at}.flow: unknown flow {node.flow!r} of bot {flow.bot!r}")
            elif node.node is not None and node.node not in sibling_flows[node.flow]:
                errors.append(f"{at}.node: flow {node.flow!r} has no node {node.node!r}")
        for field, source in node.expressions():
            try:
                expressions.parse(source)
            except ExpressionError as exc:
                errors.append(f"{at}.{field}: {exc}")
    if errors:
        return errors, []
    return _dataflow(flow, where)


def _reads(node: object) -> list[tuple[str, str]]:
    """(field, variable) pairs the node reads, roots (message, contact) excluded."""
    found: list[tuple[str, str]] = []
    for field, value in node.templates():  # type: ignore[attr-defined]
        found += [(field, path[0]) for path in templates.names_in(value)]
    for field, source in node.expressions():  # type: ignore[attr-defined]
        found += [(field, path[0]) for path in expressions.names(expressions.parse(source))]
    return [(f, name) for f, name in found if name not in ROOTS]


def _dataflow(flow: FlowDef, where: str) -> tuple[list[str], list[str]]:
    """May-be-set analysis: a variable read at a node must be set on some path from the start."""
    nodes = {n.id: n for n in flow.nodes}
    available: dict[str, set[str]] = {flow.start_node: set(flow.inputs)}
    work = [flow.start_node]
    while work:
        node = nodes[work.pop()]
        out = available[node.id] | node.writes()
        for _, target in node.edges():
            before = available.get(target)
            if before is None or not out <= before:
                available[target] = (before or set()) | out
                work.append(target)
    errors = [
        f"{where}.nodes[{node.id}].{field}: variable {name!r} is read before any node sets it"
        for node in flow.nodes
        if node.id in available
        for field, name in _reads(node)
        if name not in available[node.id]
    ]
    warnings = [
        f"{where}.nodes[{n.id}]: unreachable from {flow.start_node!r}" for n in flow.nodes if n.id not in available
    ]
    return errors, warnings
