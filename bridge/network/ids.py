"""Opaque identifiers; the core only stores and compares them."""

from __future__ import annotations

from typing import NewType

UserLoginID = NewType("UserLoginID", str)
"""One login: chosen by the core, never derived from what a user typed. Every row a connector
keeps for a login belongs to this ID, so two Matrix users logged in to the same account never
share data, and nothing of a logged-out login passes to a later one."""

RemoteAccountID = NewType("RemoteAccountID", str)
"""The remote account a login is for (e.g. a normalised email address), chosen by the connector.
A Matrix user logging in again to the same account replaces that login, keeping its ID."""

NetworkUserID = NewType("NetworkUserID", str)
"""A remote user (a correspondent); becomes a ghost."""

PortalID = NewType("PortalID", str)
"""A remote chat; becomes a Matrix room. Unique per login (the receiver)."""

MessageID = NewType("MessageID", str)
"""A remote message (e.g. an RFC 5322 Message-ID)."""
