"""One login's sender check: a trusted server's verdict first, DKIM verification otherwise."""

from __future__ import annotations

from dataclasses import dataclass

from ..nameserver import Nameserver
from .auth_results import verdict_from_header
from .dkim_check import Resolver, verify_dkim_async
from .verdict import Authenticity, SenderCheck


@dataclass(frozen=True, slots=True)
class TrustSettings:
    """The operator's choices (`network.email.authenticity`; defaults in example-config.yaml)."""

    # authserv-ids by login address, by domain, or "*" for every login
    trusted_authserv_ids: dict[str, list[str]]
    verify_dkim: bool
    nameserver: Nameserver | None
    dns_timeout: float
    quarantine: bool

    def trusted_for(self, address: str) -> frozenset[str]:
        """Every authserv-id that counts for the login `address` (address, domain and `*`)."""
        key = address.casefold()
        domain = key.rpartition("@")[2]
        ids: set[str] = set()
        for scope, values in self.trusted_authserv_ids.items():
            scope = scope.casefold()
            if scope in ("*", key, domain):
                ids.update(v.casefold() for v in values)
        return frozenset(ids)


@dataclass(frozen=True, slots=True)
class MailEvidence:
    """What the parser found in a mail that bears on who sent it."""

    raw: bytes
    from_domain: str
    from_headers: int
    auth_results: list[str]
    dkim_signed: bool


class SenderAuthenticator:
    def __init__(self, settings: TrustSettings, login_address: str) -> None:
        self.settings = settings
        self.trusted = settings.trusted_for(login_address)
        self.resolver = Resolver(settings.nameserver, settings.dns_timeout)

    async def check(self, mail: MailEvidence) -> SenderCheck:
        if mail.from_headers != 1 or not mail.from_domain:
            return SenderCheck(Authenticity.FAILED, "From header",
                               "the mail does not have exactly one sender address")
        verdict = verdict_from_header(mail.auth_results, self.trusted, mail.from_domain)
        if verdict is not None:
            return verdict
        if not self.settings.verify_dkim:
            return SenderCheck(Authenticity.UNVERIFIED, "no check", "no trusted mail server vouches for it")
        if not mail.dkim_signed:
            # Nothing to verify, and no network round trip for it.
            return SenderCheck(Authenticity.UNVERIFIED, "DKIM signature", "the mail is not signed")
        return await verify_dkim_async(mail.raw, mail.from_domain, self.resolver)
