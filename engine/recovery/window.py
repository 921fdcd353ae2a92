"""What a platform lets us send, and when the tenant lets us send it.

WhatsApp: inside the 24-hour customer-service window (opened by the contact's last message) any
message; outside it only a template (no template: skip, `outside_window`). Messenger and Instagram:
outside 24 h, nothing promotional may go out at all (no message tags are used): skip,
`platform_window`. Telegram, Slack and the web: no window.

Send windows (quiet hours inverted) are read in the contact's time zone: a step due outside the
window is held until the window opens, unless that is later than max_staleness after it was due.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine.models import ChannelType
from engine.recovery.campaigns import SkipReason

WINDOW = timedelta(hours=24)
META_WINDOWED = (ChannelType.MESSENGER, ChannelType.INSTAGRAM)


def message_kind(
    channel_type: ChannelType, last_inbound: datetime | None, now: datetime, has_template: bool, has_text: bool
) -> tuple[str | None, SkipReason | None]:
    """("template" | "text", None) to send, or (None, the reason to skip)."""
    open_window = last_inbound is not None and now - last_inbound < WINDOW
    if channel_type is ChannelType.WHATSAPP:
        if open_window and has_text:
            return "text", None
        if has_template:
            return "template", None
        return None, SkipReason.OUTSIDE_WINDOW
    if channel_type in META_WINDOWED and not open_window:
        return None, SkipReason.PLATFORM_WINDOW
    # Elsewhere a template step without a text goes out as the template's text.
    return "text", None


def zone(name: object, fallback: str) -> ZoneInfo:
    for candidate in (name, fallback, "UTC"):
        if isinstance(candidate, str) and candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def _minutes(hhmm: str) -> int:
    hours, mins = hhmm.split(":")
    return int(hours) * 60 + int(mins)


def next_opening(now: datetime, tz: ZoneInfo, start: str, end: str) -> datetime | None:
    """None when `now` is inside [start, end) local time (end <= start runs past midnight); else
    the next moment the window opens."""
    local = now.astimezone(tz)
    minute = local.hour * 60 + local.minute
    s, e = _minutes(start), _minutes(end)
    inside = s <= minute < e if s < e else (minute >= s or minute < e)
    if inside:
        return None
    opening = local.replace(hour=s // 60, minute=s % 60, second=0, microsecond=0)
    if opening <= local:
        opening += timedelta(days=1)
    return opening
