"""A throw-away CA and a server certificate for 127.0.0.1 / localhost (made by trustme)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: clients trust `ca_file`; servers use `cert_file` + `key_file`."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def ensure_tls(directory: Path, hostnames: list[str]) -> TlsFiles:
    """Create (once) a CA and a server cert valid for 127.0.0.1, localhost and `hostnames`."""
    files = TlsFiles(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    if all(
        p.is_file() and p.stat().st_size > 0
        for p in (files.ca_file, files.cert_file, files.key_file)
    ):
        return files
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="Letterbox devstack CA")
    identities = ["127.0.0.1", "localhost", *(h for h in hostnames if h != "localhost")]
    cert = ca.issue_cert(*identities, common_name=hostnames[0] if hostnames else "localhost")
    files.key_file.touch(mode=0o600)
    cert.private_key_pem.write_to_path(files.key_file)
    for index, blob in enumerate(cert.cert_chain_pems):
        blob.write_to_path(files.cert_file, append=index > 0)
    ca.cert_pem.write_to_path(files.ca_file)
    return files
