"""Reading the verdict of a trusted mail server from its `Authentication-Results` header (RFC 8601).

Only the topmost header whose authserv-id is trusted counts: a receiving server adds its header
on top, so anything below it (including headers a sender wrote to look trusted) is ignored. The
header is parsed with `authres`.
"""

from __future__ import annotations

import logging

import authres

from .verdict import Authenticity, SenderCheck, aligned

log = logging.getLogger("letterbox.email.authenticity")


def _authserv_id(value: str) -> str:
    """The authserv-id of a header value, even when the rest does not parse."""
    head = value.split(";", 1)[0].strip()
    return head.split()[0].lower() if head else ""


def _prop(result: object, ptype: str, name: str) -> str:
    for prop in getattr(result, "properties", []):
        if prop.type == ptype and prop.name == name and prop.value:
            return str(prop.value)
    return ""


def _domain_of(value: str) -> str:
    return value.rpartition("@")[2].strip().strip("<>").lower()


def verdict_from_header(values: list[str], trusted: frozenset[str], from_domain: str
                        ) -> SenderCheck | None:
    """The verdict of the topmost trusted header among `values` (top first), or None if no
    header comes from a trusted authserv-id."""
    for value in values:
        authserv = _authserv_id(" ".join(value.split()))
        if authserv not in trusted:
            continue
        how = f"Authentication-Results of {authserv}"
        try:
            header = authres.parse_value(" ".join(value.split()))
        except authres.AuthResError as e:
            log.warning("Unreadable Authentication-Results header of %s: %s", authserv, e)
            return SenderCheck(Authenticity.UNVERIFIED, how, "the mail server's verdict is unreadable")
        return _evaluate(header.results, how, from_domain)
    return None


def _evaluate(results: list[object], how: str, from_domain: str) -> SenderCheck:
    failed = ""
    for r in results:
        method, result = str(getattr(r, "method", "")).lower(), str(getattr(r, "result", "")).lower()
        if method == "dmarc":
            domain = _prop(r, "header", "from") or from_domain
            if result == "pass" and domain.lower() == from_domain:
                return SenderCheck(Authenticity.VERIFIED, how)
            if result == "fail":
                failed = failed or "DMARC failed"
        elif method == "dkim":
            domain = _prop(r, "header", "d") or _domain_of(_prop(r, "header", "i"))
            if result == "pass" and aligned(domain, from_domain):
                return SenderCheck(Authenticity.VERIFIED, how)
            if result == "fail" and aligned(domain, from_domain):
                failed = failed or "its DKIM signature is invalid"
        elif method == "spf":
            domain = _domain_of(_prop(r, "smtp", "mailfrom")) or _prop(r, "smtp", "helo")
            if result == "pass" and aligned(domain, from_domain):
                return SenderCheck(Authenticity.VERIFIED, how)
    if failed:
        return SenderCheck(Authenticity.FAILED, how, failed)
    return SenderCheck(Authenticity.UNVERIFIED, how, f"the mail server could not confirm {from_domain}")
