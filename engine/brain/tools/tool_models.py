"""Tool definitions as saved (pydantic, at the edge) and the runtime HttpTool they compile to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, model_validator

from engine.brain.flows import templates
from engine.validation import Strict


class HttpToolDef(Strict):
    """An HTTP call. url, headers, query and body are templates over the call's arguments
    ({{order_number}}) and the tool's secrets ({{secret.api_token}}), which are stored encrypted and
    never appear in a tool_executions row."""

    slug: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,62}$")
    kind: Literal["http"] = "http"
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    url: str = Field(pattern=r"^https?://")
    headers: dict[str, str] = {}
    query: dict[str, Any] = {}
    body: Any = None  # a JSON template
    timeout: float = Field(default=10.0, gt=0, le=60)  # seconds, per attempt
    retries: int = Field(default=2, ge=0, le=5)  # extra attempts on connect errors, 5xx and 429
    max_retry_after: float = Field(default=10.0, ge=0, le=60)  # a longer Retry-After fails the call
    secrets: dict[str, str] = {}  # write-only: {name: value or "env:NAME"}

    @model_validator(mode="after")
    def _secrets_declared(self) -> HttpToolDef:
        for where, value in (("url", self.url), ("headers", self.headers), ("query", self.query), ("body", self.body)):
            for path in templates.names_in(value):
                if path[0] == "secret" and (len(path) != 2 or path[1] not in self.secrets):
                    raise ValueError(f"{where}: {'.'.join(path)} is not one of the tool's secrets")
        return self

    def config(self) -> dict[str, Any]:
        """What goes in tools.config: everything but the secrets."""
        return self.model_dump(mode="json", exclude={"secrets", "slug", "kind"})


@dataclass(frozen=True, slots=True)
class HttpTool:
    slug: str
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, Any] = field(default_factory=dict)
    body: Any = None
    timeout: float = 10.0
    retries: int = 2
    max_retry_after: float = 10.0
    secrets: dict[str, str] = field(default_factory=dict)
    id: str | None = None
    escape_url: bool = True  # percent-encode values rendered into the url (not for http_json's own url)

    @classmethod
    def from_config(cls, slug: str, config: dict[str, Any], secrets: dict[str, str], id: str | None) -> HttpTool:
        # Saved configs were validated with their secrets, whose values only the vault knows.
        referenced = {p[1] for p in templates.names_in(config) if p[0] == "secret" and len(p) == 2}
        c = HttpToolDef.model_validate({**config, "slug": slug, "secrets": dict.fromkeys(referenced, "")})
        return cls(slug, c.method, c.url, c.headers, c.query, c.body, c.timeout, c.retries, c.max_retry_after,
                   secrets, id)  # fmt: skip
