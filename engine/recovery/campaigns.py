"""Recovery campaigns, templates and settings as written in the tenant file (pydantic, at the edge).

The enums here are the CHECK lists of sql/0007_recovery.sql, one list each (a unit test compares
them). Durations are written `30s`, `15m`, `2h`, `7d` (or a number of seconds). Validation errors
name the path of the bad field: `campaigns[0].steps[1].template: unknown template 'cart'`.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from engine.brain.routing.rule_models import HHMM, Condition
from engine.models import ChannelType
from engine.validation import Strict


class EventType(StrEnum):
    CART_ABANDONED = "cart_abandoned"
    CHECKOUT_ABANDONED = "checkout_abandoned"
    PAYMENT_FAILED = "payment_failed"
    SUBSCRIPTION_CANCELLED = "subscription_cancelled"
    INACTIVE_DETECTED = "inactive_detected"
    ORDER_PLACED = "order_placed"
    CONVERSATION_UNANSWERED = "conversation_unanswered"
    CUSTOM = "custom"


class CampaignType(StrEnum):
    CART_ABANDONMENT = "cart_abandonment"
    CHECKOUT_ABANDONMENT = "checkout_abandonment"
    PAYMENT_FAILED = "payment_failed"
    CHURN_PREVENTION = "churn_prevention"
    WINBACK = "winback"
    INACTIVE_USER = "inactive_user"
    UNANSWERED = "unanswered"
    CUSTOM = "custom"


class Category(StrEnum):
    MARKETING = "marketing"
    UTILITY = "utility"


class TemplateCategory(StrEnum):
    MARKETING = "marketing"
    UTILITY = "utility"
    AUTHENTICATION = "authentication"


class TemplateStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    DISABLED = "disabled"


class CampaignStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    ARCHIVED = "archived"


class EventStatus(StrEnum):
    RECEIVED = "received"  # stored; no campaign scheduled anything (yet)
    SCHEDULED = "scheduled"  # a campaign has steps for it
    RECOVERED = "recovered"  # an order credited to one of its messages
    CONVERTED = "converted"  # the customer bought, but not through a message (no credit)
    EXPIRED = "expired"
    IGNORED = "ignored"  # no contact to reach, or no campaign
    ATTRIBUTED = "attributed"  # an order_placed credited to a message
    UNATTRIBUTED = "unattributed"  # an order_placed with no message in any attribution window


class MessageStatus(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class SkipReason(StrEnum):
    CONVERTED = "converted"
    REPLIED = "replied"
    OPTED_OUT = "opted_out"
    EXPIRED = "expired"
    STALE = "stale"  # held by quiet hours past max_staleness
    FREQUENCY_CAP = "frequency_cap"
    MAX_MESSAGES = "max_messages"
    OUTSIDE_WINDOW = "outside_window"  # WhatsApp 24 h window closed and the step has no template
    NO_CONTACT = "no_contact"
    NO_CHANNEL = "no_channel"
    AUDIENCE = "audience"
    CAMPAIGN_INACTIVE = "campaign_inactive"
    MARKETING_CAP = "marketing_cap"  # 131049 after the retries
    PLATFORM_WINDOW = "platform_window"  # Messenger/Instagram 24 h window closed


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def _seconds(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ValueError(f"expected a duration such as 30s, 15m, 2h or 7d, got {value!r}")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(_seconds)]
SLUG = r"^[a-z0-9][a-z0-9_\-]{0,62}$"


class SendWindow(Strict):
    """Quiet hours, inverted: steps go out only between start and end, in the contact's time zone
    (its `timezone` attribute, else the tenant's)."""

    start: str = "08:00"
    end: str = "21:00"

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if HHMM.match(value) is None:
            raise ValueError(f"expected HH:MM, got {value!r}")
        return value


class ReplyFlow(Strict):
    """The flow a reply to this step runs: the conversation waits at `node` (an ask node), so the
    contact's answer is that node's input."""

    bot: str
    flow: str
    node: str


class Step(Strict):
    delay: Duration
    after: Literal["event", "previous"] = "previous"  # the first step always counts from the event
    template: str | None = None  # a template name (WhatsApp outside the 24 h window)
    text: str | None = Field(default=None, min_length=1)  # {{event.*}}, {{contact.*}} placeholders
    reply_flow: ReplyFlow | None = None
    channel: Literal["last"] | ChannelType = "last"

    @model_validator(mode="after")
    def _has_message(self) -> Step:
        if self.template is None and self.text is None:
            raise ValueError("a step needs a template, a text, or both")
        return self


class Campaign(Strict):
    slug: str = Field(pattern=SLUG)
    name: str | None = None
    type: CampaignType = CampaignType.CUSTOM
    category: Category = Category.MARKETING
    status: CampaignStatus = CampaignStatus.ACTIVE
    triggers: list[EventType] = Field(min_length=1)
    audience: Condition | None = None  # the routing-rule language, on the contact and its channel
    tags: list[str] = []  # and/or: the contact's conversation carries one of these tags
    steps: list[Step] = Field(min_length=1, max_length=10)
    send_window: SendWindow | None = None
    max_staleness: Duration = 12 * 3600.0
    frequency_cap: Duration | None = 24 * 3600.0  # no other campaign's message within this: skip
    max_messages: int = Field(default=3, ge=1, le=10)
    exit_on: list[Literal["converted", "replied"]] = ["converted", "replied"]
    expire_after: Duration = 7 * 86400.0
    attribution_window: Duration = 5 * 86400.0
    unanswered_after: Duration | None = None  # conversation_unanswered: waiting on an ask node this long

    @model_validator(mode="after")
    def _unanswered(self) -> Campaign:
        if EventType.CONVERSATION_UNANSWERED in self.triggers and self.unanswered_after is None:
            raise ValueError("a campaign triggered by conversation_unanswered needs unanswered_after")
        return self

    def definition(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class TemplateComponent(Strict):
    type: Literal["header", "body", "button"]
    sub_type: Literal["quick_reply", "url"] | None = None  # buttons
    index: int | None = Field(default=None, ge=0, le=9)  # buttons
    parameters: list[str] = []  # one placeholder template per {{n}} of the approved template

    @model_validator(mode="after")
    def _button(self) -> TemplateComponent:
        if self.type == "button" and (self.sub_type is None or self.index is None):
            raise ValueError("a button component needs sub_type and index")
        return self


class Template(Strict):
    name: str = Field(pattern=r"^[a-z0-9_]{1,512}$")
    language: str = "en_US"
    category: TemplateCategory = TemplateCategory.MARKETING
    status: TemplateStatus = TemplateStatus.APPROVED
    text: str | None = None  # the approved wording, with {{1}}, {{2}}: shown in transcripts
    components: list[TemplateComponent] = []
    platform_id: str | None = None


DEFAULT_STOP_WORDS: dict[str, list[str]] = {
    "en": ["stop", "unsubscribe", "stop all", "opt out", "cancel"],
    "es": ["baja", "parar", "cancelar suscripcion", "no mas"],
    "de": ["stopp", "abmelden", "abbestellen"],
    "fr": ["arret", "arreter", "desabonner", "desinscrire"],
    "pt": ["parar", "sair", "cancelar"],
    "it": ["basta", "annulla iscrizione", "disiscrivi"],
}
DEFAULT_RESUME_WORDS: dict[str, list[str]] = {
    "en": ["start", "unstop", "subscribe"],
    "es": ["alta"],
    "de": ["start"],
    "fr": ["demarrer"],
    "pt": ["voltar"],
    "it": ["iscrivi"],
}


class RecoverySettings(Strict):
    signing_key: str | None = Field(default=None, min_length=16, repr=False)  # events endpoint HMAC key
    shopify_secret: str | None = Field(default=None, min_length=8, repr=False)
    languages: list[str] = ["en"]  # whose default STOP / START words apply
    stop_words: list[str] = []  # added to the languages' defaults
    resume_words: list[str] = []
    opt_out_reply: str | None = None  # sent instead of the bot's answer to a STOP

    @field_validator("languages")
    @classmethod
    def _known(cls, values: list[str]) -> list[str]:
        unknown = [v for v in values if v not in DEFAULT_STOP_WORDS]
        if unknown:
            raise ValueError(f"no default stop words for {unknown} (known: {sorted(DEFAULT_STOP_WORDS)})")
        return values

    def words(self) -> tuple[list[str], list[str]]:
        """(stop words, resume words): the languages' defaults plus the tenant's own."""
        stop = [w for lang in self.languages for w in DEFAULT_STOP_WORDS[lang]] + self.stop_words
        resume = [w for lang in self.languages for w in DEFAULT_RESUME_WORDS[lang]] + self.resume_words
        return sorted(set(stop)), sorted(set(resume))


class RecoverySection(Strict):
    recovery: RecoverySettings | None = None
    templates: list[Template] = []
    campaigns: list[Campaign] = []


def check_references(
    section: RecoverySection,
    known_bots: dict[str, str],
    flows: dict[tuple[str, str], dict[str, str]],
    existing_templates: set[str],
) -> list[str]:
    """Cross-field problems as `path: message`. flows: {(bot id, flow slug): {node id: node type}}."""
    errors: list[str] = []
    templates = {t.name for t in section.templates} | existing_templates
    seen: set[str] = set()
    for i, t in enumerate(section.templates):
        key = f"{t.name}/{t.language}"
        if key in seen:
            errors.append(f"templates[{i}].name: duplicate template {key!r}")
        seen.add(key)
    slugs: set[str] = set()
    for i, campaign in enumerate(section.campaigns):
        if campaign.slug in slugs:
            errors.append(f"campaigns[{i}].slug: duplicate campaign {campaign.slug!r}")
        slugs.add(campaign.slug)
        for j, step in enumerate(campaign.steps):
            at = f"campaigns[{i}].steps[{j}]"
            if step.template is not None and step.template not in templates:
                errors.append(f"{at}.template: unknown template {step.template!r} (templates: {sorted(templates)})")
            if (rf := step.reply_flow) is not None:
                errors += _check_flow(rf, f"{at}.reply_flow", known_bots, flows)
    return errors


def _check_flow(
    rf: ReplyFlow, at: str, known_bots: dict[str, str], flows: dict[tuple[str, str], dict[str, str]]
) -> list[str]:
    bot = known_bots.get(rf.bot, rf.bot if rf.bot in known_bots.values() else None)
    if bot is None:
        return [f"{at}.bot: unknown bot {rf.bot!r} (bots: {sorted(known_bots)})"]
    nodes = flows.get((bot, rf.flow))
    if nodes is None:
        return [f"{at}.flow: bot {rf.bot!r} has no flow {rf.flow!r}"]
    if rf.node not in nodes:
        return [f"{at}.node: flow {rf.flow!r} has no node {rf.node!r}"]
    if nodes[rf.node] != "ask":
        return [f"{at}.node: node {rf.node!r} is a {nodes[rf.node]} node; a reply can only answer an ask node"]
    return []
