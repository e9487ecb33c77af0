"""Which room a mail belongs to: one room per set of correspondents, or per mailing list."""

from __future__ import annotations

from dataclasses import dataclass
import hashlib

from ...network import ChatInfo, ChatMember, ConnectorError, NetworkUserID, PortalID, UserInfo
from .addresses import Mailbox, address_key


@dataclass(frozen=True, slots=True)
class RoomKey:
    portal_id: PortalID
    info: ChatInfo
    # Correspondents beyond the cap on people one mail brings into a room (named in the message).
    left_out: tuple[Mailbox, ...] = ()


QUARANTINE_PORTAL = PortalID("quarantine")
QUARANTINE_NAME = "Unverified mail"


def ghost_id(mailbox: Mailbox | str) -> NetworkUserID:
    return NetworkUserID(address_key(mailbox.addr if isinstance(mailbox, Mailbox) else mailbox))


def user_info(mailbox: Mailbox, *, vouched: bool = True) -> UserInfo:
    """The ghost's profile. A name from a mail whose sender is not verified is only the address,
    and it never replaces a name the ghost already has."""
    if not vouched:
        return UserInfo(name=mailbox.addr, identifiers=[f"mailto:{mailbox.addr}"], authoritative=False)
    return UserInfo(name=mailbox.display(), identifiers=[f"mailto:{mailbox.addr}"])


def correspondents(people: list[Mailbox], own: set[str]) -> list[Mailbox]:
    """Everyone in `people` except the user's own addresses, each once, in order."""
    seen: set[str] = set()
    out: list[Mailbox] = []
    for mb in people:
        key = address_key(mb.addr)
        if key in own or key in seen:
            continue
        seen.add(key)
        out.append(mb)
    return out


def room_for(people: list[Mailbox], own: set[str], list_id: str | None, list_name: str | None = None,
             *, vouched: bool = True, max_members: int | None = None) -> RoomKey:
    """A list gets its own room; one other person a DM; several a group room.

    Names come from the mail only when its sender is verified (`vouched`); otherwise rooms and
    ghosts are named by address. At most `max_members` correspondents become members.
    """
    if not vouched:
        people = [Mailbox(m.addr) for m in people]
    others = correspondents(people, own)
    if list_id:
        return RoomKey(PortalID(f"list:{list_id.lower()}"),
                       ChatInfo(name=(list_name if vouched else None) or list_id,
                                topic=f"Mailing list {list_id}",
                                members=[ChatMember(ghost_id(m), user_info(m, vouched=vouched))
                                         for m in others[:1]]))
    if not others:
        # Mail to oneself: a "notes" DM with one's own ghost.
        me = next(iter(sorted(own)))
        return RoomKey(PortalID(f"dm:{me}"), ChatInfo(is_direct=True, topic=me, members=[
            ChatMember(NetworkUserID(me), UserInfo(name=me))]))
    shown = others if max_members is None else others[:max(1, max_members)]
    members = [ChatMember(ghost_id(m), user_info(m, vouched=vouched)) for m in shown]
    if len(others) == 1:
        return RoomKey(PortalID(f"dm:{address_key(others[0].addr)}"),
                       ChatInfo(is_direct=True, members=members, topic=others[0].addr))
    keys = sorted(address_key(m.addr) for m in others)
    joined = ",".join(keys)
    portal = f"group:{joined}" if len(joined) <= 200 else "group:" + hashlib.sha256(joined.encode()).hexdigest()
    name = ", ".join(m.name or m.addr for m in others[:4]) + (f" +{len(others) - 4}" if len(others) > 4 else "")
    return RoomKey(PortalID(portal), ChatInfo(name=name, members=members, is_direct=False),
                   left_out=tuple(others[len(shown):]))


def quarantine_room() -> RoomKey:
    """The one room per mailbox that collects mail whose sender is not verified (if configured)."""
    return RoomKey(QUARANTINE_PORTAL, ChatInfo(
        name=QUARANTINE_NAME,
        topic="Mail whose sender could not be verified. Replies here go to the address the mail claims.",
        members=[], is_direct=False))


def search_criteria(portal_id: str | None) -> tuple[str, ...]:
    """IMAP SEARCH criteria for the mail of a room: from its correspondent(s), or of its list."""
    if portal_id is None:
        return ("ALL",)
    kind, _, rest = portal_id.partition(":")
    if kind == "list":
        return ("HEADER", "List-Id", _quoted(rest))
    if kind == "dm" or (kind == "group" and "," in rest):
        senders = rest.split(",")
        criteria: tuple[str, ...] = ("FROM", _quoted(senders[-1]))
        for sender in reversed(senders[:-1]):
            criteria = ("OR", "FROM", _quoted(sender), *criteria)
        return criteria
    raise ConnectorError("Older mail of this room cannot be looked up; try `backfill` in your "
                         "chat with me for the whole mailbox.")


def _quoted(value: str) -> str:
    if any(c in value for c in '"\\\r\n'):
        raise ConnectorError("This room's address cannot be searched for.")
    return f'"{value}"'
