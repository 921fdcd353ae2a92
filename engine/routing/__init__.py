"""Routing rules: definitions (pydantic, validated on save), a compiled indexed matcher for the hot
path, and a straightforward evaluator kept as the reference and the benchmark's baseline."""

from __future__ import annotations

from engine.routing.compiled import Decision
from engine.routing.compiler import Names
from engine.routing.definitions import Rule
from engine.routing.matcher import TenantRouter, compile_rules
from engine.routing.message import Message

__all__ = ["Decision", "Message", "Names", "Rule", "TenantRouter", "compile_rules"]
