"""Email address parsing and normalisation shared by the inbound and outbound sides."""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import getaddresses
import re

import idna

_FORBIDDEN = re.compile(r"[\x00\r\n]")
_LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-\u0080-\U0010ffff]+$")


class InvalidAddress(ValueError):
    """An address that cannot be used; `reason` is safe to show to the user."""

    def __init__(self, value: str, reason: str) -> None:
        super().__init__(f"{value!r}: {reason}")
        self.value = value
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Mailbox:
    """A display name plus a normalised address (`local@domain`, domain lower-case ASCII/IDNA)."""

    addr: str
    name: str = ""

    @property
    def domain(self) -> str:
        return self.addr.rpartition("@")[2]

    def display(self) -> str:
        """`Name (address)` as shown to Matrix users, or the bare address."""
        return f"{self.name} ({self.addr})" if self.name and self.name != self.addr else self.addr


def normalise_domain(domain: str) -> str:
    domain = domain.strip().rstrip(".")
    if not domain:
        raise InvalidAddress(domain, "empty domain")
    try:
        return idna.encode(domain, uts46=True).decode("ascii").lower()
    except idna.IDNAError:
        # Legacy or odd names that IDNA 2008 rejects but are plain ASCII still work as case-folded
        if domain.isascii() and re.fullmatch(r"[A-Za-z0-9.\-_\[\]:]+", domain):
            return domain.lower()
        raise InvalidAddress(domain, "domain is not a valid internationalised domain name") from None


def normalise_address(value: str) -> str:
    """Strictly validate one bare address and return `local@domain` with the domain normalised.

    The local part keeps its case (RFC 5321 says it may be significant).
    """
    value = value.strip()
    if _FORBIDDEN.search(value):
        raise InvalidAddress(value, "control characters are not allowed in an address")
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1]
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain:
        raise InvalidAddress(value, "an address needs the form name@domain")
    if len(local) > 64 or not _LOCAL_PART.match(local) or ".." in local or local[0] == "." or local[-1] == ".":
        raise InvalidAddress(value, "the part before @ is not valid")
    return f"{local}@{normalise_domain(domain)}"


def parse_mailbox(value: str) -> Mailbox:
    """Parse `Name <addr>` or a bare address strictly; exactly one mailbox is accepted."""
    if _FORBIDDEN.search(value):
        raise InvalidAddress(value, "control characters are not allowed in an address")
    pairs = getaddresses([value])
    if len(pairs) != 1 or not pairs[0][1]:
        raise InvalidAddress(value, "expected exactly one address")
    name, addr = pairs[0]
    return Mailbox(addr=normalise_address(addr), name=name.strip())


def parse_mailbox_list(values: list[str]) -> list[Mailbox]:
    """Lenient parse of address headers from received mail; invalid entries are dropped."""
    found: list[Mailbox] = []
    seen: set[str] = set()
    for name, addr in getaddresses([v for v in values if v]):
        try:
            mailbox = Mailbox(addr=normalise_address(addr), name=name.strip())
        except InvalidAddress:
            continue
        key = address_key(mailbox.addr)
        if key not in seen:
            seen.add(key)
            found.append(mailbox)
    return found


def address_key(addr: str) -> str:
    """Case-insensitive identity of an address, used for ghosts, rooms and comparisons."""
    return addr.casefold()
