"""Routing benchmark: compiled matcher vs the straightforward evaluator, in one run.

    .venv/bin/python -m tests.bench.bench_routing [--tenants 100 --rules 1000 --messages 100000]
    .venv/bin/pytest tests/bench/bench_routing.py -s

100 tenants x 1,000 rules (keywords, phrases, regexes, attributes, time windows, payloads, prefixes,
splits, compositions; ten distinct rule sets, each tenant compiled on its own) and 30,000 messages
(`--messages 100000 --sample 3000` for the longer run). The evaluator checks every rule in order, so
it runs on a sample of the messages; both must produce the same decisions on that sample.
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from typing import Any

from engine.brain.routing.compiler import Names
from engine.brain.routing.evaluator import evaluate
from engine.brain.routing.matcher import TenantRouter, compile_rules, sort_rules
from engine.brain.routing.message import Message
from engine.brain.routing.rule_models import Rule

ZONES = ["Europe/Madrid", "America/New_York", "Asia/Tokyo", "UTC", "America/Sao_Paulo"]
CHANNEL_TYPES = ["whatsapp", "telegram", "slack", "messenger"]
WEEK = 7 * 24 * 3600
BASE_TS = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def vocabulary(rng: random.Random, size: int = 4000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = {"".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(size)}
    return sorted(words)


def make_conditions(  # noqa: C901 - one branch per share of the rule mix
    rng: random.Random, vocab: list[str], channels: list[str]
) -> dict[str, Any] | None:
    w = rng.choice
    kind = rng.random()
    keyword = {"contains": [w(vocab) for _ in range(rng.randint(1, 3))]}
    hours = {"time": {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "18:00"}}
    if kind < 0.30:
        return keyword
    if kind < 0.38:
        return {"contains": f"{w(vocab)} {w(vocab)}"}
    if kind < 0.50:
        return {"regex": rf"(?i)\b{w(vocab)}\s+#?(\d{{3,8}})\b"}
    if kind < 0.55:
        return {"regex": rf"\b(?:{w(vocab)}|{w(vocab)})\b.*\b{w(vocab)}\b"}
    if kind < 0.65:
        attr = {"name": "country", "in": rng.sample(["es", "mx", "ar", "us", "br", "fr"], 2)}
        return {"all": [{"attribute": attr}, keyword]}
    if kind < 0.70:
        return {"all": [{"attribute": {"name": "plan", "equals": w(["gold", "silver"])}}, keyword]}
    if kind < 0.80:
        return {"all": [keyword, hours]}
    if kind < 0.85:
        return {"payload": [f"P_{rng.randint(0, 300)}"]}
    if kind < 0.88:
        return {"starts_with": w(vocab)}
    if kind < 0.90:
        return {"equals": f"{w(vocab)} {w(vocab)}"}
    if kind < 0.93:
        return {"all": [{"channel_type": w(CHANNEL_TYPES)}, keyword]}
    if kind < 0.95:
        return {"all": [{"channel": [w(channels)]}, {"any": [keyword, {"regex": rf"\b{w(vocab)}\b"}]}]}
    if kind < 0.97:
        return {"all": [keyword, {"not": {"attribute": {"name": "vip", "exists": True}}}]}
    if kind < 0.98:
        return {"all": [keyword, {"split": {"percent": 50, "salt": "exp"}}]}
    if kind < 0.99:
        return {"all": [{"message_type": "text"}, {"attribute": {"name": "plan", "equals": "gold"}}, keyword]}
    return {"all": [{"attribute": {"name": "vip", "exists": True}}, keyword]}


def make_rules(rng: random.Random, vocab: list[str], channels: list[str], n: int) -> list[Rule]:
    rules = []
    for i in range(n - 2):
        cont = rng.random() < 0.05
        actions: list[Any] = [{"tag": [f"t{i}"]}] + (["continue"] if cont else [{"reply": {"text": f"r{i}"}}])
        raw = {"name": f"rule-{i:04d}", "priority": rng.randint(1, 500), "actions": actions}
        raw["conditions"] = make_conditions(rng, vocab, channels)
        rules.append(Rule.model_validate(raw))
    # The kind of catch-alls every tenant has: after hours, and a regex on order numbers.
    closed = {"not": {"time": {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "20:00"}}}
    rules.append(Rule.model_validate({"name": "after-hours", "priority": 900, "conditions": closed,
                                      "actions": [{"reply": {"text": "closed"}}]}))  # fmt: skip
    rules.append(Rule.model_validate({"name": "order-number", "priority": 950,
                                      "conditions": {"regex": r"^#?\d{5,}$"},
                                      "actions": [{"start_flow": {"bot": "b", "flow": "orders"}}]}))  # fmt: skip
    return rules


def make_message(rng: random.Random, vocab: list[str], tenant: dict[str, Any]) -> Message:
    words = [rng.choice(vocab) for _ in range(rng.randint(3, 10))]
    if rng.random() < 0.5:  # many messages say something some rule listens for
        words.insert(rng.randrange(len(words)), rng.choice(tenant["hot"]))
    if rng.random() < 0.1:
        words.insert(1, f"#{rng.randint(100, 99_999_999)}")
    text = " ".join(words)
    if rng.random() < 0.3:
        text = text.capitalize() + "?"
    attributes: dict[str, Any] = {"country": rng.choice(["es", "mx", "ar", "us", "br", "fr", "de"])}
    if rng.random() < 0.3:
        attributes["plan"] = rng.choice(["gold", "silver", "free"])
    if rng.random() < 0.1:
        attributes["vip"] = True
    channel_id = rng.choice(tenant["channels"])
    return Message(
        text=text,
        type="button" if rng.random() < 0.05 else "text",
        channel_id=channel_id,
        channel_type=tenant["channel_types"][channel_id],
        contact_id=f"contact-{rng.randint(0, 1_000_000)}",
        timestamp=BASE_TS + rng.random() * WEEK,
        payload=f"P_{rng.randint(0, 300)}" if rng.random() < 0.05 else None,
        attributes=attributes,
        is_new=rng.random() < 0.1,
        status="bot",
    )


def build(
    tenants: int, rules: int, messages: int, seed: int, rule_sets: int = 10
) -> tuple[list[dict[str, Any]], list[Message]]:
    """Every tenant compiles a router of its own; their definitions come from `rule_sets` distinct sets
    (validating 100,000 definitions took longer than the whole benchmark should)."""
    rng = random.Random(seed)
    vocab = vocabulary(rng)
    sets = [make_rules(rng, vocab, [f"t{t}-c{k}" for k in range(3)], rules) for t in range(min(tenants, rule_sets))]
    built = []
    for t in range(tenants):
        channels = [f"t{t % len(sets)}-c{k}" for k in range(3)]  # the channels its rule set names
        defs = sets[t % len(sets)]
        hot = [w for r in defs for a in [r.conditions] if a and a.contains for w in a.contains]
        names = Names(timezone=ZONES[t % len(ZONES)])
        built.append({
            "names": names, "defs": defs, "ordered": sort_rules(defs), "router": compile_rules(defs, names),
            "channels": channels, "channel_types": {ch: CHANNEL_TYPES[k] for k, ch in enumerate(channels)},
            "hot": hot or vocab[:10],
        })  # fmt: skip
    stream = [make_message(rng, vocab, built[i % tenants]) for i in range(messages)]
    return built, stream


def run(tenants: int = 100, rules: int = 1000, messages: int = 30_000, sample: int = 500, seed: int = 7) -> dict[str, float]:  # fmt: skip
    t0 = time.perf_counter()
    built, stream = build(tenants, rules, messages, seed)
    print(f"built {tenants} tenants x {rules} rules and {messages} messages in {time.perf_counter() - t0:.1f}s")
    routers: list[TenantRouter] = [b["router"] for b in built]
    for b in built:  # the Brain builds each known channel's matcher at load time, as here
        for channel_id, channel_type in b["channel_types"].items():
            b["router"].matcher(channel_id, channel_type)

    # Millions of long-lived rule objects would make every young-generation collection triggered by
    # the decisions rescan them; a worker freezes its loaded definitions the same way.
    gc.collect()
    gc.freeze()
    t0 = time.perf_counter()
    decisions = [routers[i % tenants].route(m) for i, m in enumerate(stream)]
    compiled_rate = len(stream) / (time.perf_counter() - t0)

    # The same, building each Message (folding and splitting the text) inside the timing, as a worker does.
    fields = [(m.text, m.type, m.channel_id, m.channel_type, m.contact_id, m.timestamp, m.payload, m.attributes,
               m.is_new) for m in stream]  # fmt: skip
    t0 = time.perf_counter()
    for i, (text, kind, cid, ctype, contact, ts, payload, attrs, new) in enumerate(fields):
        routers[i % tenants].route(
            Message(text=text, type=kind, channel_id=cid, channel_type=ctype, contact_id=contact, timestamp=ts,
                    payload=payload, attributes=attrs, is_new=new)
        )  # fmt: skip
    with_message_rate = len(fields) / (time.perf_counter() - t0)

    picks = stream[:sample]
    t0 = time.perf_counter()
    reference = [evaluate(built[i % tenants]["ordered"], m, built[i % tenants]["names"]) for i, m in enumerate(picks)]
    baseline_rate = len(picks) / (time.perf_counter() - t0)

    mismatches = [i for i, ref in enumerate(reference) if ref != decisions[i]]
    assert not mismatches, f"{len(mismatches)} decisions differ, first at message {mismatches[0]}"
    matched = sum(1 for d in decisions if d.rules)
    ratio = compiled_rate / baseline_rate
    print(f"compiled matcher:        {compiled_rate:>12,.0f} decisions/s ({len(stream):,} messages)")
    print(f"  ... building each Message too: {with_message_rate:>8,.0f} decisions/s")
    print(f"straightforward evaluator:{baseline_rate:>11,.0f} decisions/s ({len(picks):,} messages)")
    print(f"ratio: {ratio:.1f}x; {matched / len(stream):.0%} of messages matched a rule; "
          f"same decisions on all {len(picks):,} sampled messages")  # fmt: skip
    return {"compiled": compiled_rate, "with_message": with_message_rate, "baseline": baseline_rate, "ratio": ratio}


def test_routing_benchmark() -> None:
    result = run()
    assert result["ratio"] >= 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--sample", type=int, default=500, help="messages the evaluator decides too")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    run(args.tenants, args.rules, args.messages, args.sample, args.seed)


if __name__ == "__main__":
    main()
