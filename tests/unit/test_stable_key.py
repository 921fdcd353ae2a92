"""stable_key is the string form of stable_id, computed without the UUID object (the worker's ids)."""

from __future__ import annotations

import uuid

import pytest

from engine.models import stable_id, stable_key


@pytest.mark.parametrize(
    "parts",
    [("chan", "12345", "in"), ("chan", "évènement ✓", "reply", 0), (uuid.UUID(int=7), 3.5, None), ("",)],
)
def test_stable_key_is_the_text_of_stable_id(parts: tuple[object, ...]) -> None:
    key = stable_key(*parts)
    assert key == str(stable_id(*parts))
    assert uuid.UUID(key).version == 5
