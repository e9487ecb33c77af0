"""Small core pieces: secret sealing, localpart escaping, permissions."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st
import pytest

from bridge.core import localpart
from bridge.core.permissions import Level, level_for
from bridge.core.secrets import SecretBox, SecretError


def test_secret_round_trip_and_rotation() -> None:
    old = SecretBox("k1", os.urandom(32))
    token = old.seal("hunter2")
    assert "hunter2" not in token and token.startswith("v1:k1:")
    assert old.open(token) == "hunter2"
    new = SecretBox("k2", os.urandom(32), {"k1": old._keys["k1"]})
    assert new.open(token) == "hunter2"
    assert new.needs_reseal(token) and not new.needs_reseal(new.seal("x"))
    with pytest.raises(SecretError, match="unknown key id"):
        SecretBox("k3", os.urandom(32)).open(token)


def test_tampered_secret_is_refused() -> None:
    box = SecretBox("k1", os.urandom(32))
    token = box.seal("secret")
    body = token.split(":", 2)[2]
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    with pytest.raises(SecretError):
        box.open(f"v1:k1:{flipped}")


@given(st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=80))
def test_localpart_escape_round_trips(identifier: str) -> None:
    escaped = localpart.escape(identifier)
    assert set(escaped) <= set("abcdefghijklmnopqrstuvwxyz0123456789._=-/")
    assert localpart.unescape(escaped) == identifier


def test_permission_levels_most_specific_wins() -> None:
    perms = {"*": "relay", "example.org": "user", "@boss:example.org": "admin"}
    assert level_for("@boss:example.org", perms) == Level.ADMIN
    assert level_for("@someone:example.org", perms) == Level.USER
    assert level_for("@stranger:elsewhere.net", perms) == Level.RELAY
    assert level_for("@x:y", {}) == Level.NONE
