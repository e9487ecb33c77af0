"""Mail read in another mail client (\\Seen set there) moves the user's read marker in Matrix."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ...network import MessageID, NetworkUserID, PortalID, RemoteReadReceipt
from .addresses import address_key
from .db import MailIndexRow

if TYPE_CHECKING:
    from .client import EmailClient

log = logging.getLogger("letterbox.email.read")


class SeenElsewhere:
    """The sync engine's SeenListener for one login: per room, the newest of the mails just
    marked \\Seen becomes the user's read marker (the core sets it as the user's own account
    when double puppeting is on, and drops it otherwise). The user's own mail (Sent) is skipped."""

    def __init__(self, client: EmailClient) -> None:
        self.client = client

    async def seen_elsewhere(self, folder: str, uidvalidity: int, uids: list[int]) -> None:
        client = self.client
        if folder == client.sent_folder:
            return
        login_id = client.login.login_id
        newest: dict[str, MailIndexRow] = {}
        for row in await client.mail_index.at_places(login_id, folder, uids):
            if row.portal_id and (row.portal_id not in newest
                                  or row.sent_at > newest[row.portal_id].sent_at):
                newest[row.portal_id] = row
        for portal, row in newest.items():
            log.debug("%s read elsewhere: %s", client.address, row.message_id)
            await client.bridge.queue_remote_event(login_id, RemoteReadReceipt(
                portal=PortalID(portal), sender=NetworkUserID(address_key(row.sender)),
                target=MessageID(row.message_id), from_self=True))
