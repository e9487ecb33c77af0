"""One logged-in mailbox: the IMAP sync engine, the outbox and the Matrix-side capabilities."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from ...network import (
    ActionNotSupported,
    BackfillHandler,
    BridgeAPI,
    ChatInfo,
    ChatMember,
    ConnectorError,
    DisplayNameHandler,
    EditHandler,
    LoginAPI,
    LoginState,
    LoginStateEvent,
    MatrixEdit,
    MatrixMessage,
    MatrixReaction,
    MatrixReadReceipt,
    MatrixRedaction,
    MessageID,
    NetworkClient,
    NetworkUserID,
    PortalID,
    PortalRef,
    ReactionHandler,
    ReadReceiptHandler,
    RedactionHandler,
    StartChatHandler,
    SyncHandler,
)
from .addresses import InvalidAddress, address_key, parse_mailbox
from .authenticity import SenderAuthenticator
from .db import (
    CheckpointTable,
    MailIndexTable,
    OutboxRow,
    OutboxState,
    OutboxTable,
    PortalPeopleTable,
)
from .imap import (
    Backfill,
    ImapAccount,
    ImapError,
    ImapFolderError,
    ImapOps,
    ImapSync,
    KeptImapSession,
    SyncState,
)
from .oauth.keeper import SignInKeeper
from .oauth.tokens import OAuthTokens, TokenSet
from .outbound import clean_display_name, event_id_hash_from_message_id
from .outbound.errors import ComposeError
from .outbound.smtp_submit import SmtpAccount
from .outbox import Outbox
from .read_elsewhere import SeenElsewhere
from .receive import InboundPipeline
from .rooms import ghost_id, search_criteria, user_info
from .send import prepare_mail
from .servers import ServerSpec

if TYPE_CHECKING:
    from .connector import EmailConnector

log = logging.getLogger("letterbox.email.client")


class EmailClient(NetworkClient, StartChatHandler, ReadReceiptHandler, EditHandler,
                  RedactionHandler, ReactionHandler, DisplayNameHandler, SyncHandler,
                  BackfillHandler):
    def __init__(self, connector: EmailConnector, login: LoginAPI) -> None:
        self.connector = connector
        self.login = login
        meta = login.metadata
        self.address: str = meta["address"]
        self.display_name: str = meta.get("display_name", "")
        self.imap_spec = ServerSpec.from_json(meta["imap"])
        self.smtp_spec = ServerSpec.from_json(meta["smtp"])
        db = connector.bridge.connector_db
        self.mail_index = MailIndexTable(db)
        self.portal_people = PortalPeopleTable(db)
        self.authenticator = SenderAuthenticator(connector.config.trust, self.address)
        self.sent_folder: str | None = None
        self.checkpoints = CheckpointTable(db, login.login_id)
        self.outbox = Outbox(self, OutboxTable(db))
        # filing sent mail in Sent: one session kept open between copies
        self.sent_session = KeptImapSession(connector.config.idle_close_s, self.address)
        self.own_addresses = {address_key(self.address)}
        self._sync: ImapSync | None = None
        self._state = LoginState.CONNECTING
        self._reaction_notice_rooms: set[str] = set()
        self.bearer = self._oauth_tokens()
        self.keeper = (SignInKeeper(connector, self.address, self.bearer, self._sign_in_gone,
                                    self._signed_in_again) if self.bearer is not None else None)

    @property
    def bridge(self) -> BridgeAPI:
        return self.connector.bridge

    def _password(self) -> str:
        if self.bearer is not None:
            return ""
        return self.bridge.decrypt_secret(self.login.metadata["password"])

    def _oauth_tokens(self) -> OAuthTokens | None:
        """The login's token source when it signed in with OAuth (else it has a password)."""
        oauth = self.login.metadata.get("oauth")
        if oauth is None:
            return None
        provider = self.connector.oauth_provider(str(oauth["provider"]))
        if provider is None:
            raise ConnectorError(f"the sign-in provider {oauth['provider']!r} is no longer "
                                 "configured on this bridge; ask its administrator")
        tokens = TokenSet.open(str(oauth["tokens"]), self.bridge.decrypt_secret)
        return OAuthTokens(provider, tokens, self._save_tokens)

    async def _save_tokens(self, tokens: TokenSet) -> None:
        self.login.metadata["oauth"]["tokens"] = tokens.seal(self.bridge.encrypt_secret)
        await self.bridge.save_login_metadata(self.login.login_id, self.login.metadata)

    def imap_account(self) -> ImapAccount:
        cfg = self.connector.config
        s = self.imap_spec
        return ImapAccount(s.host, s.port, s.security, self.login.metadata.get("username", self.address),
                           self._password(), cfg.ca_file, cfg.timeout, bearer=self.bearer)

    def smtp_account(self) -> SmtpAccount:
        cfg = self.connector.config
        s = self.smtp_spec
        return SmtpAccount(s.host, s.port, s.security,  # type: ignore[arg-type]
                           self.login.metadata.get("username", self.address), self._password(),
                           cfg.ca_file, cfg.timeout, bearer=self.bearer)

    # ---------------------------------------------------------------- lifecycle
    async def connect(self) -> None:
        if self.keeper is not None:
            self.keeper.start()
        await self._start_sync()

    async def _start_sync(self) -> None:
        cfg = self.connector.config
        # the Sent folder is looked up on the sync session itself (no session of its own)
        self._sync = ImapSync(
            self.imap_account(), sink=InboundPipeline(self), checkpoints=self.checkpoints,
            listener=self, folders=["INBOX", *cfg.extra_folders],
            special_folders=("\\Sent",) if cfg.sync_sent else (), on_special=self._special_folder,
            seen=SeenElsewhere(self),
            backfill=Backfill(max_age_days=cfg.backfill_days, max_messages=cfg.backfill_messages),
            idle_renew_s=cfg.idle_renew_s, poll_interval_s=cfg.poll_interval_s,
            use_notify=cfg.use_notify, connect_limit=self.connector.imap_connect_limit,
        )
        await self._sync.start()
        self.outbox.start()

    def _special_folder(self, flag: str, folder: str | None) -> None:
        if flag == "\\Sent":
            self.sent_folder = folder

    async def disconnect(self) -> None:
        if self.keeper is not None:
            await self.keeper.stop()
        await self._stop_sync()

    async def _stop_sync(self) -> None:
        await self.outbox.stop()
        await self.sent_session.close()
        if self._sync:
            await self._sync.stop()
            self._sync = None

    async def _sign_in_gone(self, reason: str) -> None:
        """The OAuth grant is gone: stop the mailbox until the user signs in again."""
        if self._sync:
            await self._sync.stop()
            self._sync = None
        self._state = LoginState.BAD_CREDENTIALS
        await self.bridge.send_login_state(self.login.login_id,
                                           LoginStateEvent(LoginState.BAD_CREDENTIALS, reason))

    async def _signed_in_again(self) -> None:
        await self._stop_sync()
        await self._start_sync()

    async def logout(self) -> None:
        await self.disconnect()
        await self.checkpoints.delete_all()

    async def on_state(self, state: SyncState, reason: str | None) -> None:
        """The sync engine's StateListener: forwarded as the login's state."""
        if (state == SyncState.BAD_CREDENTIALS and self._state == LoginState.BAD_CREDENTIALS
                and self.bearer is not None and self.bearer.revoked):
            return  # already reported with its sign-in link
        self._state = LoginState(state.value)
        if self._state == LoginState.BAD_CREDENTIALS and self.keeper is not None:
            reason = f"{reason}. {self.keeper.sign_in_again()}"
        await self.bridge.send_login_state(self.login.login_id, LoginStateEvent(self._state, reason))

    async def report_smtp_auth_failure(self, reason: str) -> None:
        if self.keeper is not None:
            reason = f"{reason}. {self.keeper.sign_in_again()}"
        await self.bridge.send_login_state(
            self.login.login_id, LoginStateEvent(LoginState.BAD_CREDENTIALS, f"SMTP: {reason}"))

    async def copy_to_sent(self, raw: bytes, message_id: str) -> bool:
        """Put a sent mail into the Sent folder once (kept if a copy with its Message-ID is
        there already). False: the server could not be reached, try again later."""
        try:
            result = await ImapOps(self.imap_account(), self.sent_session).append(
                raw, unless_message_id=message_id)
        except ImapFolderError as e:
            log.warning("Not copying sent mail to %s: %s", self.address, e.reason)
            return True
        except ImapError as e:
            log.warning("Could not copy a sent mail to the Sent folder of %s yet: %s", self.address, e.reason)
            return False
        log.debug("Sent mail %s is in %s", message_id, result.folder)
        return True

    async def composed_here(self, message_id: str) -> bool:
        """Whether this login composed the mail `message_id` from a Matrix event."""
        if event_id_hash_from_message_id(message_id) is None:
            return False
        row = await self.mail_index.get(self.login.login_id, message_id)
        return row is not None and address_key(row.sender) in self.own_addresses

    # ---------------------------------------------------------------- Matrix -> email
    async def handle_matrix_message(self, msg: MatrixMessage) -> MessageID | None:
        if msg.content.get("msgtype") == "m.notice":
            raise ActionNotSupported("Notices are not sent as email.")
        cfg = self.connector.config
        existing = await self.outbox.table.get(msg.event_id)
        if existing:  # the same Matrix event handled again (replay): already queued
            return MessageID(existing.message_id)
        # Wall-clock time: edits and reactions carry no timestamp of their own.
        now_ms = int(time.time() * 1000)
        if await self.outbox.table.sent_in_last_hour(self.login.login_id, now_ms) >= cfg.max_mails_per_hour:
            raise ConnectorError(f"Not sent: the limit of {cfg.max_mails_per_hour} mails per hour is reached.")
        prepared = await prepare_mail(self, msg)
        await self.mail_index.upsert(prepared.index)
        # Whoever the owner writes to belongs to the room.
        await self.portal_people.add(self.login.login_id, msg.portal.portal_id,
                                     [address_key(a) for a in prepared.recipients])
        await self.outbox.table.insert(OutboxRow(
            event_id=msg.event_id, login_id=self.login.login_id, portal_id=msg.portal.portal_id,
            room_id=msg.portal.room_id, message_id=prepared.message_id, raw=prepared.raw,
            recipients=prepared.recipients,
        ))
        self.outbox.wake()
        if prepared.dropped:
            await self.bridge.notify_portal(
                self.login.login_id, msg.portal,
                f"Not sent to {', '.join(prepared.dropped)}: only a mail whose sender is not verified "
                "or not part of this conversation named them. Start a chat with them to write to them.")
        return MessageID(prepared.message_id)

    async def handle_matrix_edit(self, edit: MatrixEdit) -> None:
        if not self.connector.config.send_edits:
            raise ActionNotSupported("Edits are not sent by email (email cannot be changed once sent).")
        content = dict(edit.new_content)
        content["body"] = "Correction: " + str(content.get("body", ""))
        if isinstance(content.get("formatted_body"), str):
            content["formatted_body"] = "<p><em>Correction:</em></p>" + content["formatted_body"]
        msg = MatrixMessage(portal=edit.portal, event_id=edit.event_id, sender=edit.sender,
                            content=content, timestamp_ms=int(time.time() * 1000), reply_to=edit.target)
        await self.handle_matrix_message(msg)

    async def handle_matrix_redaction(self, redaction: MatrixRedaction) -> None:
        row = await self.outbox.table.by_message_id(self.login.login_id, redaction.target)
        if row and row.state == OutboxState.QUEUED:
            await self.outbox.table.set_state(row.event_id, OutboxState.FAILED, last_error="cancelled")
            raise ActionNotSupported("Cancelled: this mail had not been sent yet and will not be.")
        raise ActionNotSupported("Email cannot be unsent: the mail stays in the recipients' mailboxes.")

    async def handle_matrix_reaction(self, reaction: MatrixReaction) -> None:
        if not self.connector.config.send_reactions:
            if reaction.portal.room_id in self._reaction_notice_rooms:
                return
            self._reaction_notice_rooms.add(reaction.portal.room_id)
            raise ActionNotSupported("Reactions are not sent by email (the bridge is configured so).")
        msg = MatrixMessage(portal=reaction.portal, event_id=reaction.event_id, sender=reaction.sender,
                            content={"msgtype": "m.text", "body": f"Reacted {reaction.key}"},
                            timestamp_ms=int(time.time() * 1000), reply_to=reaction.target)
        await self.handle_matrix_message(msg)

    async def handle_matrix_read_receipt(self, receipt: MatrixReadReceipt) -> None:
        """Everything in the room up to the mail read is read (by the mails' dates)."""
        row = await self.mail_index.get(self.login.login_id, receipt.target)
        if row is None:
            return
        places = await self.mail_index.places_up_to(self.login.login_id, receipt.portal.portal_id,
                                                    row.sent_at)
        if not places:
            return
        try:
            await ImapOps(self.imap_account()).set_seen(places)
        except ImapError as e:
            log.warning("Could not mark the mail up to %s as read: %s", receipt.target, e.reason)

    async def sync_now(self) -> None:
        if self._sync is None:
            raise ConnectorError("This mailbox is not connected.")
        await self._sync.check_now()

    async def backfill(self, portal: PortalRef | None, count: int) -> int:
        if self._sync is None:
            raise ConnectorError("This mailbox is not connected.")
        criteria = search_criteria(portal.portal_id if portal else None)
        try:
            return await self._sync.backfill_older(count, criteria)
        except ImapError as e:
            raise ConnectorError(f"Could not read older mail: {e.reason}") from None

    async def set_display_name(self, name: str) -> str:
        try:
            cleaned = clean_display_name(name, "name")
        except ComposeError as e:
            raise ConnectorError(f"That name cannot be used: {e.reason}") from None
        self.display_name = cleaned
        metadata = {**self.login.metadata, "display_name": cleaned}
        self.login.metadata = metadata
        await self.bridge.save_login_metadata(self.login.login_id, metadata)
        return f"{cleaned} <{self.address}>" if cleaned else self.address

    async def resolve_identifier(self, identifier: str) -> tuple[PortalID, NetworkUserID, ChatInfo]:
        try:
            mailbox = parse_mailbox(identifier)
        except InvalidAddress as e:
            raise ConnectorError(f"{identifier} is not an email address: {e.reason}") from None
        user = ghost_id(mailbox)
        return PortalID(f"dm:{user}"), user, ChatInfo(
            is_direct=True, topic=mailbox.addr, members=[ChatMember(user, user_info(mailbox))])
