"""The route table: each endpoint declared once, with its scopes and pydantic models, so that the
dispatcher (auth, limits, validation, errors) and the OpenAPI document are built from the same data."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from engine.validation import problem_lines

if TYPE_CHECKING:
    from engine.admin.api.context import Call

Handler = Callable[["Call"], Awaitable["Reply"]]


@dataclass(frozen=True, slots=True)
class Reply:
    """What a handler returns: a status and a JSON-able body (a model, a list of models, a dict)."""

    body: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str  # relative to /api/v1, aiohttp syntax: /bots/{id}
    handler: Handler
    summary: str
    tag: str
    scopes: tuple[str, ...]  # the token needs one of these
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: Any = None  # a model, list[model] or None (no body)
    status: int = 200
    errors: tuple[int, ...] = ()  # besides 401/403/429 (every authenticated route) and 422 (with a body/query)
    validated_by_handler: bool = False  # the body is checked by the tenant-file code (same error paths)

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"\{(\w+)\}", self.path)


class ApiError(Exception):
    """An answer other than success: status, a short code and a message (and field errors)."""

    def __init__(self, status: int, code: str, detail: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = errors or []


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"no {what} with that id")


def problems(errors: list[str]) -> ApiError:
    """`path: message` lines (as `engine load` prints them) as a 422 with [{path, message}]."""
    out = []
    for line in errors:
        path, sep, message = line.partition(": ")
        out.append({"path": path, "message": message} if sep else {"path": "", "message": line})
    return ApiError(422, "invalid", "the request is invalid: see errors", out)


def validation_problems(exc: ValidationError, prefix: str = "") -> ApiError:
    return problems([prefix + line for line in problem_lines(exc)])
