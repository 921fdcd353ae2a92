"""The API's own pydantic models: responses, query strings and the bodies that are not tenant-file
sections (those reuse the tenant file's models, so a body is checked exactly as `engine load`
checks a file)."""

from __future__ import annotations

import base64
import uuid
from datetime import date, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from engine.admin.api.routing import ApiError
from engine.recovery.report import parse_since
from engine.validation import Strict, TimeZone

MAX_PAGE = 200


class Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class FieldError(Out):
    path: str
    message: str


class ErrorOut(Out):
    error: str
    detail: str
    errors: list[FieldError] | None = None


class TenantOut(Out):
    id: str
    slug: str
    name: str
    timezone: str
    created_at: datetime
    updated_at: datetime


class TenantPatch(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    timezone: TimeZone | None = None


class BotOut(Out):
    id: str
    slug: str
    name: str
    default_flow_id: str | None
    welcome_text: str
    echo: bool
    settings: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class ChannelOut(Out):
    id: str
    slug: str
    type: str
    bot: str | None
    bot_id: str | None
    external_id: str | None
    config: dict[str, Any]
    active: bool
    secret_names: list[str] = Field(description="names of the stored secrets; their values are never returned")
    webhook_url: str
    created_at: datetime
    updated_at: datetime


class RuleOut(Out):
    id: str
    name: str
    priority: int
    status: str
    conditions: dict[str, Any] | None
    actions: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime


class FlowOut(Out):
    id: str
    version: int
    bot: str
    bot_id: str
    slug: str
    name: str
    default: bool
    definition: dict[str, Any]
    created_at: datetime


class FlowVersionOut(Out):
    version: int
    name: str
    created_at: datetime


class ValidationOut(Out):
    valid: bool
    errors: list[FieldError]
    warnings: list[str]


class ToolOut(Out):
    id: str
    slug: str
    kind: str
    config: dict[str, Any]
    secret_names: list[str]
    created_at: datetime
    updated_at: datetime


class FaqOut(Out):
    id: str
    bot: str
    question: str
    answer: str
    keywords: list[str]
    created_at: datetime
    updated_at: datetime


class DocumentOut(Out):
    id: str
    bot: str
    slug: str
    title: str
    body: str
    url: str | None
    language: str
    created_at: datetime
    updated_at: datetime


class ConversationOut(Out):
    id: str
    channel_id: str
    channel_type: str
    contact_id: str
    contact_name: str | None
    external_key: str
    bot_id: str | None
    status: Literal["bot", "human", "closed"]
    flow_id: str | None
    flow_version: int | None
    node_id: str | None
    variables: dict[str, Any]
    tags: list[str]
    created_at: datetime
    last_message_at: datetime


class ConversationPage(Out):
    items: list[ConversationOut]
    next_cursor: str | None


class MessageOut(Out):
    id: str
    direction: Literal["inbound", "outbound"]
    sender: str
    message_type: str
    text: str | None
    created_at: datetime


class MessagePage(Out):
    items: list[MessageOut]
    next_cursor: str | None


class AgentReplyIn(Strict):
    text: str = Field(min_length=1, max_length=4096)
    agent: str | None = Field(default=None, max_length=100, description="who answers (default: the token's name)")


class CommandOut(Out):
    id: str = Field(description="the message id (a reply) or the command id")
    conversation_id: str
    action: str
    status: Literal["accepted"] = "accepted"


class ContactOut(Out):
    id: str
    channel_id: str
    external_id: str
    name: str | None
    attributes: dict[str, Any]
    tags: list[str]
    opted_out: bool = Field(description="the marketing opt-out the recovery scheduler obeys")
    opted_out_at: datetime | None
    opt_out_source: str | None = Field(
        description="who made the latest opt-out/in change: keyword, whatsapp_user_preferences or api"
    )
    created_at: datetime
    last_seen_at: datetime


class ContactPage(Out):
    items: list[ContactOut]
    next_cursor: str | None


class ContactPatch(Strict):
    attributes: dict[str, Any] | None = Field(
        default=None, description="merged into the contact's attributes (null removes a key), applied in order"
    )
    tags: list[str] | None = Field(default=None, max_length=100)
    opted_out: bool | None = Field(
        default=None, description="the marketing opt-out (recovery campaigns' marketing steps are skipped)"
    )


class DeadLetterOut(Out):
    id: str
    queue: str
    reason: str
    kind: str
    conversation_key: str | None


class DeadLetterList(Out):
    items: list[DeadLetterOut]


class AuditOut(Out):
    id: str
    actor: str
    token_id: str | None
    action: str
    resource: str
    resource_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    created_at: datetime


class AuditPage(Out):
    items: list[AuditOut]
    next_cursor: str | None


# --- query strings ------------------------------------------------------------------------------------


class PageQuery(Strict):
    limit: int = Field(default=50, ge=1, le=MAX_PAGE)
    cursor: str | None = Field(default=None, max_length=200)


class ConversationQuery(PageQuery):
    status: Literal["bot", "human", "closed"] | None = None
    channel_id: uuid.UUID | None = None
    contact_id: uuid.UUID | None = None
    updated_since: datetime | None = None


class ContactQuery(PageQuery):
    channel_id: uuid.UUID | None = None
    tag: str | None = Field(default=None, max_length=200)


class AuditQuery(PageQuery):
    resource: str | None = Field(default=None, max_length=50)


class DeadLetterQuery(Strict):
    limit: int = Field(default=50, ge=1, le=MAX_PAGE)


# --- cursors: opaque to clients, (timestamp, id) of the last row of a page ---------------------------------


def encode_cursor(at: datetime, row_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([at.isoformat(), row_id])).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    if cursor is None:
        return None
    try:
        at, row_id = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(at), str(uuid.UUID(row_id))
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise ApiError(422, "invalid", "bad cursor", [{"path": "query.cursor", "message": "not a cursor"}]) from None


# --- recovery campaigns, templates and their analytics ---------------------------------------------------


class CampaignOut(Out):
    id: str
    slug: str
    name: str
    type: str
    category: str
    status: str
    triggers: list[str]
    definition: dict[str, Any] = Field(description="the campaign as validated (durations in seconds)")
    created_at: datetime
    updated_at: datetime


class TemplateOut(Out):
    id: str
    name: str
    language: str
    category: str
    components: list[dict[str, Any]]
    text: str | None
    status: str
    platform_id: str | None
    created_at: datetime
    updated_at: datetime


class FunnelOut(Out):
    events: int
    scheduled: int
    sent: int
    delivered: int
    read: int
    replied: int
    converted: int
    skipped: dict[str, int] = Field(description="steps skipped, cancelled or failed, by reason")
    revenue_at_risk: float
    revenue_recovered: float
    conversion_rate: float = Field(description="events converted by a message / events")


class AnalyticsDayOut(FunnelOut):
    period_start: date
    updated_at: datetime


class AnalyticsOut(Out):
    campaign_id: str
    slug: str
    since: date
    totals: FunnelOut
    days: list[AnalyticsDayOut]


def _since(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return parse_since(value)
    except ValueError:
        raise ValueError(f"expected YYYY-MM-DD or Nd (N days ago), got {value!r}") from None


class AnalyticsQuery(Strict):
    since: Annotated[date | None, BeforeValidator(_since)] = Field(
        default=None, description="YYYY-MM-DD, or Nd for N days ago (default 30d); days of the events"
    )
