"""Tools a flow calls: HTTP tools defined per tenant, and built-ins (kb_search, memory, http_json)."""

from __future__ import annotations
