"""Is a received mail really from the address in its From header? (DKIM, SPF, DMARC)

The answer comes from the topmost `Authentication-Results` header whose authserv-id the login
trusts (`auth_results.py`); where there is none, DKIM signatures are verified here with dkimpy
(`dkim_check.py`). `SenderCheck` is the verdict the inbound pipeline acts on.
"""

from __future__ import annotations

from .check import SenderAuthenticator, TrustSettings
from .verdict import Authenticity, SenderCheck

__all__ = ["Authenticity", "SenderAuthenticator", "SenderCheck", "TrustSettings"]
