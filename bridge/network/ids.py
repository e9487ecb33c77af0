"""Opaque identifiers chosen by a connector; the core only stores and compares them."""

from __future__ import annotations

from typing import NewType

UserLoginID = NewType("UserLoginID", str)
"""One remote account (e.g. an email address), unique within the connector."""

NetworkUserID = NewType("NetworkUserID", str)
"""A remote user (a correspondent); becomes a ghost."""

PortalID = NewType("PortalID", str)
"""A remote chat; becomes a Matrix room. Unique per login (the receiver)."""

MessageID = NewType("MessageID", str)
"""A remote message (e.g. an RFC 5322 Message-ID)."""
