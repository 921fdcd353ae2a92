"""Bot flows: definitions validated on save, a safe expression language, and the interpreter."""

from __future__ import annotations
