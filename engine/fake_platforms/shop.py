"""A fake shop order API for the example bot's HTTP tool (demo and tests):
GET /shop/api/orders/{number} with a Bearer token -> {"number", "status", "eta"}; 00000 is unknown."""

from __future__ import annotations

import zlib

from aiohttp import web

STATUSES = ("processing", "shipped", "out for delivery", "delivered")


async def order(request: web.Request) -> web.Response:
    if not request.headers.get("Authorization", "").startswith("Bearer "):
        return web.json_response({"error": "unauthorized"}, status=401)
    number = request.match_info["number"].lstrip("#")
    if not number.isdigit() or number == "00000":
        return web.json_response({"error": "order not found"}, status=404)
    status = STATUSES[zlib.crc32(number.encode()) % len(STATUSES)]  # stable per order number
    return web.json_response({"number": number, "status": status, "eta": "2026-12-01"})
