"""What a tenant file may read from the operator's environment: only the names the operator allows.

A tenant file (`${NAME}`, `${NAME:-default}` anywhere; `env:NAME` as a channel or tool secret) is
written by whoever configures a tenant, who must not be able to read the engine's own settings
(`welcome_text: "${ENGINE_MASTER_KEY}"` would send the master key to users). ENGINE_TENANT_ENV lists
the names a file may read, comma-separated; a name ending in `*` allows a prefix (`SHOP_*`). ENGINE_*
names are never readable, whatever the list says. A name that is not allowed is treated as unset:
`${NAME:-default}` takes its default, anything else is an error that names it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

FORBIDDEN_PREFIX = "ENGINE_"


class NotAllowed(ValueError):
    """The file reads a variable it may not, or one that is not set."""


@dataclass(frozen=True, slots=True)
class TenantEnvironment:
    names: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()
    source: Mapping[str, str] = field(default_factory=lambda: os.environ)

    @classmethod
    def allowing(cls, spec: str, source: Mapping[str, str] | None = None) -> TenantEnvironment:
        """From ENGINE_TENANT_ENV's value: "NAME,OTHER,PREFIX_*"."""
        items = [item.strip() for item in spec.split(",") if item.strip()]
        names = frozenset(i for i in items if not i.endswith("*"))
        prefixes = tuple(i[:-1] for i in items if i.endswith("*") and len(i) > 1)
        return cls(names, prefixes, os.environ if source is None else source)

    def allows(self, name: str) -> bool:
        if name.upper().startswith(FORBIDDEN_PREFIX):
            return False
        return name in self.names or any(name.startswith(p) for p in self.prefixes)

    def get(self, name: str) -> str | None:
        """The variable's value if the file may read it and it is set; None otherwise."""
        return self.source.get(name) if self.allows(name) else None

    def require(self, name: str) -> str:
        """The value, or NotAllowed saying why there is none."""
        if name.upper().startswith(FORBIDDEN_PREFIX):
            raise NotAllowed(f"environment variable {name} is the engine's own: a tenant file may not read it")
        if not self.allows(name):
            raise NotAllowed(f"environment variable {name} is not allowed (add it to ENGINE_TENANT_ENV)")
        value = self.source.get(name)
        if value is None:
            raise NotAllowed(f"environment variable {name} is not set")
        return value


NOTHING = TenantEnvironment()  # a file may read no variable at all
