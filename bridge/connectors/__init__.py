"""Registry of network connectors, loaded by name so the core never imports their internals."""

from __future__ import annotations

import importlib

from ..network import NetworkConnector

REGISTRY: dict[str, str] = {
    "email": "bridge.connectors.email.connector:EmailConnector",
}


def load_connector(name: str) -> NetworkConnector:
    """`name` is a registry key or a `package.module:Class` path (for out-of-tree connectors)."""
    target = REGISTRY.get(name, name)
    module_name, _, class_name = target.partition(":")
    if not class_name:
        raise ValueError(f"unknown connector {name!r} (known: {', '.join(REGISTRY)})")
    cls = getattr(importlib.import_module(module_name), class_name)
    connector = cls()
    if not isinstance(connector, NetworkConnector):
        raise TypeError(f"{target} is not a NetworkConnector")
    return connector
