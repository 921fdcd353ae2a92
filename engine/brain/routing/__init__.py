"""Routing rules: definitions (pydantic, validated on save), a compiled indexed matcher for the hot
path, and a straightforward evaluator kept as the reference and the benchmark's baseline."""

from __future__ import annotations

from engine.brain.routing.compiled import Decision
from engine.brain.routing.compiler import Names
from engine.brain.routing.matcher import TenantRouter, compile_rules
from engine.brain.routing.message import Message
from engine.brain.routing.rule_models import Rule

__all__ = ["Decision", "Message", "Names", "Rule", "TenantRouter", "compile_rules"]
