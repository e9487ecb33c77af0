"""Encryption of secrets at rest (AES-256-GCM); each token names the key that sealed it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = "v1"


class SecretError(Exception):
    """A stored secret cannot be opened (unknown key id, or tampered data)."""


class SecretBox:
    """Seals strings with the current key; opens tokens sealed with it or an old key."""

    def __init__(self, key_id: str, key: bytes, old_keys: dict[str, bytes] | None = None) -> None:
        if len(key) != 32:
            raise ValueError("secret key must be 32 bytes")
        if ":" in key_id:
            raise ValueError("key id must not contain ':'")
        self.key_id = key_id
        self._keys = {**(old_keys or {}), key_id: key}

    @classmethod
    def from_config(cls, key_id: str, key_b64: str, old: dict[str, str]) -> SecretBox:
        return cls(
            key_id,
            base64.b64decode(key_b64),
            {kid: base64.b64decode(k) for kid, k in (old or {}).items()},
        )

    def seal(self, plaintext: str) -> str:
        nonce = os.urandom(12)
        aad = f"{_VERSION}:{self.key_id}".encode()
        ct = AESGCM(self._keys[self.key_id]).encrypt(nonce, plaintext.encode("utf-8"), aad)
        return f"{_VERSION}:{self.key_id}:{base64.b64encode(nonce + ct).decode()}"

    def open(self, token: str) -> str:
        try:
            version, key_id, payload = token.split(":", 2)
        except ValueError:
            raise SecretError("not a sealed secret") from None
        if version != _VERSION:
            raise SecretError(f"unknown secret format {version!r}")
        key = self._keys.get(key_id)
        if key is None:
            raise SecretError(f"secret sealed with unknown key id {key_id!r}")
        raw = base64.b64decode(payload)
        try:
            plain = AESGCM(key).decrypt(raw[:12], raw[12:], f"{version}:{key_id}".encode())
        except InvalidTag:
            raise SecretError("secret failed authentication (wrong key or tampered)") from None
        return plain.decode("utf-8")

    def derive_key(self, purpose: str) -> bytes:
        """A key for `purpose` derived from the current key (HMAC-SHA256; never stored)."""
        return hmac.new(self._keys[self.key_id], purpose.encode(), hashlib.sha256).digest()

    def needs_reseal(self, token: str) -> bool:
        return token.split(":", 2)[1:2] != [self.key_id]

    def is_sealed(self, value: object) -> bool:
        """A token this box can open (the format, and a key id it knows)."""
        if not isinstance(value, str):
            return False
        parts = value.split(":", 2)
        return len(parts) == 3 and parts[0] == _VERSION and parts[1] in self._keys

    def reseal_all(self, data: Any) -> tuple[Any, int]:
        """`data` (JSON-like) with every token sealed by an old key sealed again with the
        current one, and how many were; used after a key rotation."""
        if isinstance(data, dict):
            pairs = [(k, self.reseal_all(v)) for k, v in data.items()]
            return {k: v for k, (v, _) in pairs}, sum(n for _, (_, n) in pairs)
        if isinstance(data, list):
            items = [self.reseal_all(v) for v in data]
            return [v for v, _ in items], sum(n for _, n in items)
        if self.is_sealed(data) and self.needs_reseal(data):
            return self.seal(self.open(data)), 1
        return data, 0
