"""Sender checks on real signed mail from the corpus and on forged headers (no network: a trusted
Authentication-Results header decides without a DNS lookup, so the resolver points nowhere)."""

from __future__ import annotations

from pathlib import Path

from bridge.connectors.email.authenticity import Authenticity, SenderAuthenticator, TrustSettings
from bridge.connectors.email.authenticity.check import MailEvidence
from bridge.connectors.email.inbound.parse import parse_email_sync
from bridge.connectors.email.nameserver import Nameserver
from devstack.ports import free_port

CORPUS = Path(__file__).parent / "corpus"


def evidence(raw: bytes) -> MailEvidence:
    parsed = parse_email_sync(raw)
    return MailEvidence(raw=raw, from_domain=parsed.sender.domain, from_headers=parsed.from_headers,
                        auth_results=parsed.auth_results, dkim_signed=parsed.dkim_signed)


def checker(*trusted: str) -> SenderAuthenticator:
    # Nothing listens there: a check that needed DNS would come back "could not be looked up".
    settings = TrustSettings(trusted_authserv_ids={"*": list(trusted)}, verify_dkim=True,
                             nameserver=Nameserver("127.0.0.1", free_port()), dns_timeout=1, quarantine=False)
    return SenderAuthenticator(settings, "me@example.net")


async def test_trusted_header_with_aligned_dkim_pass_verifies_a_real_gmail_bounce() -> None:
    raw = (CORPUS / "bounces" / "deltachat__gmail_ndn.eml").read_bytes()
    check = await checker("mx.google.com").check(evidence(raw))
    assert check.status is Authenticity.VERIFIED and "mx.google.com" in check.how


async def test_real_signature_of_another_domain_does_not_vouch_for_the_from_address() -> None:
    # Signed by gmx.net, pass per the receiving server, but From is example.org.
    raw = (CORPUS / "html" / "deltachat__gmx-forward.eml").read_bytes()
    check = await checker("hq5.merlinux.eu").check(evidence(raw))
    assert check.status is Authenticity.UNVERIFIED


async def test_header_of_an_untrusted_server_is_ignored() -> None:
    raw = (b"Authentication-Results: mx.attacker.example; dmarc=pass header.from=bank.example\r\n"
           b"From: Bank <alerts@bank.example>\r\nTo: me@example.net\r\nSubject: x\r\n\r\nhi\r\n")
    check = await checker("mx.example.net").check(evidence(raw))
    assert check.status is Authenticity.UNVERIFIED and check.reason == "the mail is not signed"


async def test_only_the_topmost_trusted_header_counts() -> None:
    raw = (b"Authentication-Results: mx.example.net; dkim=fail header.d=bank.example\r\n"
           b"Authentication-Results: mx.example.net; dmarc=pass header.from=bank.example\r\n"
           b"From: Bank <alerts@bank.example>\r\nTo: me@example.net\r\nSubject: x\r\n\r\nhi\r\n")
    check = await checker("mx.example.net").check(evidence(raw))
    assert check.status is Authenticity.FAILED


async def test_dmarc_pass_for_another_domain_does_not_verify() -> None:
    raw = (b"Authentication-Results: mx.example.net; dmarc=pass header.from=attacker.example\r\n"
           b"From: Bank <alerts@bank.example>\r\nTo: me@example.net\r\nSubject: x\r\n\r\nhi\r\n")
    check = await checker("mx.example.net").check(evidence(raw))
    assert check.status is Authenticity.UNVERIFIED


async def test_two_from_headers_fail() -> None:
    raw = (b"Authentication-Results: mx.example.net; dmarc=pass header.from=bank.example\r\n"
           b"From: Bank <alerts@bank.example>\r\nFrom: Other <x@attacker.example>\r\n"
           b"To: me@example.net\r\nSubject: x\r\n\r\nhi\r\n")
    check = await checker("mx.example.net").check(evidence(raw))
    assert check.status is Authenticity.FAILED


def test_trusted_ids_combine_all_logins_domain_and_address() -> None:
    settings = TrustSettings(trusted_authserv_ids={
        "*": ["mx.all.example"], "corp.example": ["MX.Corp.Example"], "ann@corp.example": ["ann.mx"],
        "other.example": ["mx.other.example"]}, verify_dkim=True, nameserver=None, dns_timeout=5,
        quarantine=False)
    assert settings.trusted_for("Ann@corp.example") == {"mx.all.example", "mx.corp.example", "ann.mx"}


def test_a_dns_timeout_is_waited_for_once_per_mail() -> None:
    """Several signatures and a DNS server that never answers: one lookup, then unverified (a
    timeout is a fault no real loopback server gives on demand, so the lookup is a stand-in)."""
    import dkim

    from bridge.connectors.email.authenticity.dkim_check import verify_dkim
    from devstack.dkim import DkimRig

    rig = DkimRig()  # for signing: its DNS server is not asked
    rig.start()
    try:
        raw = b"From: Bob <bob@example.org>\r\nTo: me@example.net\r\nSubject: x\r\n\r\nhi\r\n"
        for selector in ("one", "two", "three"):
            raw = rig.sign(raw, "example.org", selector)
    finally:
        rig.stop()
    lookups: list[bytes] = []

    def never_answers(name: bytes, timeout: float = 5) -> bytes | None:
        lookups.append(name)
        raise dkim.DnsTimeoutError("no answer")

    check = verify_dkim(raw, "example.org", never_answers, 1)
    assert check.status is Authenticity.UNVERIFIED and len(lookups) == 1
