"""The outcome of checking who sent a mail."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Authenticity(Enum):
    VERIFIED = "verified"  # the From domain vouches for the mail (aligned DKIM/SPF, or DMARC pass)
    UNVERIFIED = "unverified"  # nothing proves it either way (unsigned, foreign signer, DNS down)
    FAILED = "failed"  # a check that should have passed did not: likely forged


@dataclass(frozen=True, slots=True)
class SenderCheck:
    """`how` names what decided (shown to the user); `reason` says why it is not verified."""

    status: Authenticity
    how: str
    reason: str = ""

    @property
    def verified(self) -> bool:
        return self.status is Authenticity.VERIFIED


def aligned(signer_domain: str, from_domain: str) -> bool:
    """DMARC-style alignment without a public-suffix list: the signer is the From domain or a
    parent of it (`example.org` may vouch for `news.example.org`, never the other way round)."""
    signer = signer_domain.strip().strip(".").lower()
    author = from_domain.strip().strip(".").lower()
    if not signer or not author or "." not in signer:
        return False
    return author == signer or author.endswith("." + signer)
