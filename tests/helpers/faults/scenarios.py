"""The fault scenarios. Each takes a FaultContext and a Size and returns an Outcome; none
raises for a delivery fault (a stalled mailbox is reported as lost mail), so the soak can run
them all. They raise only when the set-up itself fails (no login, no room)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from email.message import EmailMessage
import time
from typing import Any

from devstack.bot_flows import email_login, management_room, wait_notice
from devstack.matrix_client import MatrixTestClient
from tests.helpers.bridge_process import BridgeProcess
from tests.helpers.email_e2e import mail

from .actors import KillLog, deliver_paced, kill_loop, kill_now, terminate_loop
from .context import FaultContext
from .ledger import Outcome, Tokens, Verdict
from .observe import (
    MailCopy,
    file_tokens,
    folder_copies,
    inbox_uids,
    mails_being_sent,
    room_history,
    text_tokens,
    wait_for_mail_token,
    wait_for_text,
)
from .smtp_trap import PHASES, SmtpTrap

# After the servers are back, new mail must flow again within this bound (issue: "a few seconds").
RECONNECT_WITHIN_S = 10.0
# An aimed kill waits this long for a submission to cut, else the bridge is killed right away.
AIM_WITHIN_S = 8.0


@dataclass(frozen=True, slots=True)
class Size:
    """How hard a run pushes. The suite runs the defaults; the soak scales them up."""

    mails: int = 40            # mails (or Matrix messages) per kill scenario
    kills: int = 8             # SIGKILLs per kill scenario
    gap_s: tuple[float, float] = (0.2, 1.5)  # the bridge runs this long between two kills
    terminations: int = 20     # rounds of pg_terminate_backend
    backfill: int = 5          # backfill.max_messages in the UIDVALIDITY scenario
    synapse_down_s: float = 6.0
    dovecot_down_s: float = 4.0
    settle_s: float = 120.0    # bound on every wait for the system to catch up after faults

    def scaled(self, kills: int) -> Size:
        """The same scenarios with `kills` kills, as many more mails and terminations, and (up to
        five times) longer outages and waits."""
        factor = kills / self.kills
        longer = min(5.0, max(1.0, factor / 5))
        return Size(mails=round(self.mails * factor), kills=kills, gap_s=self.gap_s,
                    terminations=round(self.terminations * factor), backfill=self.backfill,
                    synapse_down_s=self.synapse_down_s * longer,
                    dovecot_down_s=self.dovecot_down_s * longer, settle_s=self.settle_s * longer)

    def mail_interval(self) -> float:
        """Spread the mails over the kill period (kills x mean gap x ~1.5 for the restarts)."""
        return self.kills * sum(self.gap_s) / 2 * 1.5 / self.mails


# ---------------------------------------------------------------- shared steps

async def together(first: Coroutine[Any, Any, Any],
                   second: Coroutine[Any, Any, Any]) -> tuple[Any, Any]:
    """Run two actors at once; if one fails, the other is cancelled (no kill loop outlives a
    failed delivery and restarts a bridge after the scenario ended)."""
    async with asyncio.TaskGroup() as group:
        a, b = group.create_task(first), group.create_task(second)
    return a.result(), b.result()


@dataclass(slots=True)
class Inbound:
    """A user logged in to a fresh mailbox, the bridge process running, and the room of one
    correspondent created by a warm-up mail (sentinel 0)."""

    ctx: FaultContext
    user: MatrixTestClient
    me: str
    bridge: BridgeProcess
    tokens: Tokens
    sender: str
    room: str

    @property
    def sender_address(self) -> str:
        return f"sender-{self.tokens.run}@example.org"

    def mail(self, i: int, *, attachment: bytes | None = None) -> EmailMessage:
        token = self.tokens.text(i)
        msg = mail(self.sender, [self.me], f"Note {i}", f"Mail number {i}.\n\n{token}\n")
        if attachment is not None:
            msg.add_attachment(attachment, maintype="application", subtype="octet-stream",
                               filename=f"{self.tokens.file(i)}.bin")
        return msg

    def sentinel(self, n: int) -> EmailMessage:
        return mail(self.sender, [self.me], f"Sentinel {n}", f"Barrier {self.tokens.sentinel(n)}")

    async def deliver(self, msgs: list[EmailMessage], interval_s: float = 0.0) -> None:
        await deliver_paced(self.ctx.mail, msgs, self.me, self.sender_address, interval_s)


async def log_in(ctx: FaultContext, bridge: BridgeProcess, user: MatrixTestClient,
                 mailbox: tuple[str, str], smtp: str | None = None) -> str:
    room = await management_room(bridge, user)
    await email_login(bridge, user, room, *mailbox,
                      imap=f"127.0.0.1:{ctx.mail.imap_port}:starttls",
                      smtp=smtp or f"127.0.0.1:{ctx.mail.submission_port}:starttls")
    return room


async def inbound_setup(ctx: FaultContext, **network: Any) -> Inbound:
    user = await ctx.new_user()
    mailbox = await ctx.new_mailbox()
    bridge = ctx.bridge(**network)
    await asyncio.to_thread(bridge.start)
    await log_in(ctx, bridge, user, mailbox)
    tokens = Tokens.fresh()
    inbound = Inbound(ctx, user, mailbox[0], bridge, tokens,
                      f"Fault Sender <sender-{tokens.run}@example.org>", "")
    ctx.say("logged in")
    await inbound.deliver([inbound.sentinel(0)])
    inbound.room = await user.wait_for_room_invite(timeout=30)
    await user.join(inbound.room)
    await wait_for_text(user, inbound.room, tokens.sentinel(0), 30)
    return inbound


async def settle_inbound(inb: Inbound, outcome: Outcome, size: Size, count: int, *,
                         files: list[int] | None = None, restart_check: bool = True) -> list[Any]:
    """After the faults: all `count` mails are in the mailbox, the bridge runs; a sentinel mail
    marks the end (the room is posted in order); with `restart_check`, a clean restart and a
    second sentinel show that nothing is posted again. Then the room's history is judged against the mailbox order.
    Returns the room's events."""
    ctx, settle_s = inb.ctx, size.settle_s
    ctx.say("faults over; waiting for the mailbox, then the sentinels")
    order = await inbox_uids(ctx.mail, inb.me, inb.tokens, count, timeout=60)
    if inb.bridge.process is None:
        await asyncio.to_thread(inb.bridge.start)
    for n in (1, 2) if restart_check else (1,):
        if n == 2:
            await asyncio.to_thread(inb.bridge.stop)
            await asyncio.to_thread(inb.bridge.start)
        await inb.deliver([inb.sentinel(n)])
        try:
            await wait_for_text(inb.user, inb.room, inb.tokens.sentinel(n), settle_s)
            ctx.say(f"sentinel {n} arrived")
        except TimeoutError:
            outcome.problems.append(f"sentinel {n} did not arrive within {settle_s:.0f} s: "
                                    "the room stopped receiving mail")
            break
    events = await room_history(inb.user, inb.room)
    outcome.verdicts.append(Verdict.judge("mails in Matrix", order, text_tokens(events, inb.tokens)))
    if files is not None:
        by_text = {inb.tokens.text(i): inb.tokens.file(i) for i in files}
        expected = [by_text[t] for t in order if t in by_text]
        outcome.verdicts.append(Verdict.judge("attachments in Matrix", expected,
                                              file_tokens(events, inb.tokens)))
    return events


# ---------------------------------------------------------------- inbound under kills

async def inbound_kills(ctx: FaultContext, size: Size) -> Outcome:
    """Mail arrives at a steady rate while the bridge is SIGKILLed at seeded random moments."""
    return await _inbound_under_kills(ctx, size, "inbound mail, bridge killed", attachments=False)


async def inbound_attachment_kills(ctx: FaultContext, size: Size) -> Outcome:
    """As inbound_kills, each mail with an attachment: text and file each arrive once."""
    return await _inbound_under_kills(ctx, size, "inbound mail with attachments, bridge killed",
                                      attachments=True)


async def _inbound_under_kills(ctx: FaultContext, size: Size, name: str, *,
                               attachments: bool) -> Outcome:
    outcome = Outcome(f"{name} ({ctx.database})")
    inb = await inbound_setup(ctx)
    msgs = [inb.mail(i, attachment=(f"{inb.tokens.file(i)} " * 200).encode() if attachments else None)
            for i in range(size.mails)]
    log = KillLog()
    ctx.say(f"{name}: {size.mails} mails, {size.kills} kills")
    await together(inb.deliver(msgs, size.mail_interval()),
                   kill_loop(inb.bridge, ctx.rng, size.kills, log, gap_s=size.gap_s))
    outcome.facts["faults"] = log.summary()
    await settle_inbound(inb, outcome, size, size.mails,
                         files=list(range(size.mails)) if attachments else None)
    return outcome


async def postgres_terminations(ctx: FaultContext, size: Size) -> Outcome:
    """Mail arrives while every connection of the bridge's database is terminated repeatedly."""
    outcome = Outcome("inbound mail, PostgreSQL connections terminated")
    if ctx.pg_admin_dsn is None:
        raise ValueError("this scenario needs the bridge on PostgreSQL")
    database = ctx.db_url.rsplit("/", 1)[1].split("?")[0]
    inb = await inbound_setup(ctx)
    msgs = [inb.mail(i) for i in range(size.mails)]
    interval = size.terminations * 0.5 * 1.2 / size.mails
    ctx.say(f"postgres: {size.mails} mails, {size.terminations} rounds of terminations")
    rounds = terminate_loop(ctx.pg_admin_dsn, database, ctx.rng, size.terminations)
    _, terminated = await together(inb.deliver(msgs, interval), rounds)
    outcome.facts["faults"] = f"{terminated} connections terminated in {size.terminations} rounds"
    await settle_inbound(inb, outcome, size, size.mails)
    return outcome


# ---------------------------------------------------------------- outbound under kills

async def start_chat(bridge: BridgeProcess, user: MatrixTestClient, management: str,
                     address: str) -> str:
    await user.send_text(management, f"start-chat {address}")
    await wait_notice(user, management, bridge.bot_mxid, f"Created a chat with {address}", timeout=30)
    room = await user.wait_for_room_invite(timeout=30)
    await user.join(room)
    return room


async def outbound_kills(ctx: FaultContext, size: Size) -> Outcome:
    """Matrix messages go out as mail while the bridge is SIGKILLed: at random moments, in the
    middle of an SMTP DATA transfer, and after the server accepted a mail but before the bridge
    heard it. Checks the correspondent's INBOX and the user's Sent folder."""
    outcome = Outcome(f"outbound messages, bridge killed ({ctx.database})")
    user = await ctx.new_user()
    mailbox = await ctx.new_mailbox()
    peer, _ = await ctx.new_mailbox("peer")
    bridge = ctx.bridge()
    tokens = Tokens.fresh()
    log = KillLog()
    in_flight: list[tuple[float, set[str]]] = []  # per kill: the outbox rows still `sending`

    async def note_in_flight() -> None:
        in_flight.append((log.at[-1], await mails_being_sent(ctx.db_url)))

    log.after_kill = note_in_flight
    trap = SmtpTrap(ctx.mail.submission_port, lambda: kill_now(bridge, log),
                    lambda text: tokens.found_in(text, "ft"))
    await trap.start()
    cut: dict[str, list[str]] = {phase: [] for phase in PHASES}
    missed: list[str] = []
    try:
        await asyncio.to_thread(bridge.start)
        management = await log_in(ctx, bridge, user, mailbox, smtp=f"127.0.0.1:{trap.port}:plain")
        room = await start_chat(bridge, user, management, peer)

        # A quarter of the kills (at least one of each phase) are aimed at submissions; they
        # come in the first half of the run, while messages are still being sent.
        aimed = [PHASES[n % 2] for n in range(min(size.kills, max(2, size.kills // 4)))]
        early = aimed + ["timer"] * max(0, size.kills // 2 - len(aimed))
        ctx.rng.shuffle(early)
        plan = early + ["timer"] * (size.kills - len(early))

        async def aimed_kill(n: int) -> bool:
            phase = plan[n]
            if phase == "timer":
                return False
            caught = trap.arm(phase)
            try:
                found = await asyncio.wait_for(caught, AIM_WITHIN_S)
            except TimeoutError:
                trap.disarm()
                missed.append(phase)
                return False
            cut[phase].extend(found)
            ctx.say(f"kill {n}: cut a submission {phase} ({found})")
            return True

        async def send_all() -> None:
            interval = size.mail_interval()
            next_at = time.monotonic()
            for i in range(size.mails):
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                body = tokens.text(i)
                await user.send_text(room, f"Subject: Fault run {tokens.run}\n{body}" if i == 0
                                     else f"Message {i}: {body}")
                next_at += interval

        ctx.say(f"outbound: {size.mails} messages, {size.kills} kills ({plan.count('timer')} "
                "at random moments, the others aimed at SMTP submissions)")
        await together(send_all(), kill_loop(bridge, ctx.rng, size.kills, log,
                                             gap_s=size.gap_s, before_kill=aimed_kill))
        outcome.facts["faults"] = (f"{log.summary()}; cut mid-DATA: {len(cut['mid-data'])}, "
                                   f"cut after the server's 250: {len(cut['after-accept'])}, "
                                   f"aimed but no submission within {AIM_WITHIN_S:.0f} s: {len(missed)}")
        if bridge.process is None:
            await asyncio.to_thread(bridge.start)
        # The window SMTP leaves open: the server had accepted the mail (its 250 passed the
        # relay, or was cut there) when a kill found its outbox row still `sending`.
        unheard = {t for accepted_at, found, message_id in trap.accepted for t in found
                   if any(accepted_at <= killed_at and message_id in sending
                          for killed_at, sending in in_flight)}
        await _outbound_settle(ctx, size, outcome, bridge, user, room, mailbox[0], peer, tokens,
                               sorted(unheard))
        submitted = [t for _, found, _ in trap.accepted for t in found]
        # Order: the order in which the server accepted each mail the first time. (The INBOX
        # order is Postfix's parallel delivery, and a Sent copy owed across a crash is filed
        # after the restart: neither says in which order the bridge sent.)
        outcome.verdicts.append(Verdict.judge("order of submission", tokens.texts(size.mails),
                                              list(dict.fromkeys(submitted))))
    finally:
        await trap.close()
    return outcome


async def _outbound_settle(ctx: FaultContext, size: Size, outcome: Outcome, bridge: BridgeProcess,
                           user: MatrixTestClient, room: str, me: str, peer: str, tokens: Tokens,
                           accepted_unheard: list[str]) -> None:
    ctx.say("faults over; waiting for the sentinels")
    for n in (1, 2):
        if n == 2:
            await asyncio.to_thread(bridge.stop)
            await asyncio.to_thread(bridge.start)
        sentinel = tokens.sentinel(n)
        await user.send_text(room, f"Barrier {sentinel}")
        try:
            for address, folder in ((peer, "INBOX"), (me, "\\Sent")):
                await wait_for_mail_token(ctx.mail, address, folder, tokens, sentinel, "sentinel",
                                          size.settle_s)
        except TimeoutError as exc:
            outcome.problems.append(f"sentinel {n}: {exc}")
            break
        ctx.say(f"sentinel {n} arrived")
    expected = tokens.texts(size.mails)
    received = await asyncio.to_thread(folder_copies, ctx.mail, peer, "INBOX", tokens)
    filed = await asyncio.to_thread(folder_copies, ctx.mail, me, "\\Sent", tokens)
    # A mail cut after the server's 250 may come twice, as the same mail (same Message-ID):
    # SMTP gives no way to learn that the unheard reply was an acceptance.
    tolerated = {t: 1 for t in accepted_unheard if len(_message_ids(received, t)) == 1}
    outcome.verdicts.append(Verdict.judge(
        "mails in the correspondent's INBOX", expected, _tokens(received), check_order=False,
        allowed_extra=tolerated, note="same Message-ID, killed before the 250 was recorded"))
    outcome.verdicts.append(Verdict.judge("copies in the Sent folder", expected, _tokens(filed),
                                          check_order=False))


def _tokens(copies: list[MailCopy]) -> list[str]:
    return [t for c in copies for t in c.tokens]


def _message_ids(copies: list[MailCopy], token: str) -> set[str]:
    return {c.message_id for c in copies if token in c.tokens}


# ---------------------------------------------------------------- one bad mail among good ones

async def media_upload_limit(user: MatrixTestClient) -> int:
    async with user.session.get(f"{user.hs_url}/_matrix/client/v1/media/config",
                                headers={"Authorization": f"Bearer {user.token}"}) as resp:
        resp.raise_for_status()
        return int((await resp.json())["m.upload.size"])


async def oversized_attachment(ctx: FaultContext, size: Size) -> Outcome:
    """A mail whose attachment is over the homeserver's upload limit, then normal mail: the
    normal mail all arrives, and the big one arrives with a note naming the file."""
    outcome = Outcome(f"attachment over the upload limit ({ctx.database})")
    inb = await inbound_setup(ctx)
    limit = await media_upload_limit(inb.user)
    big = inb.mail(0, attachment=b"\0" * (limit + 64 * 1024))
    outcome.facts["upload limit"] = f"{limit // 1024} KiB"
    normal = 5
    await inb.deliver([big, *(inb.mail(i) for i in range(1, normal + 1))], 0.2)
    events = await settle_inbound(inb, outcome, size, normal + 1, restart_check=False)
    name = f"{inb.tokens.file(0)}.bin"
    told = [e for e in events if e.get("type") == "m.room.message" and not e["content"].get("url")
            and name in str(e["content"].get("body", ""))]
    if not told:
        outcome.problems.append(f"no message in the room names the file that was too large ({name})")
    return outcome


async def poison_mail(ctx: FaultContext, size: Size) -> Outcome:
    """A mail the homeserver cannot take whatever the bridge retries (its sender's address is
    longer than any Matrix user ID may be) between normal mails: the mails after it arrive, in
    order, and the poison itself is not silently dropped: it arrives, or a notice reports it
    with the original attached."""
    outcome = Outcome(f"poison mail ({ctx.database})")
    inb = await inbound_setup(ctx)
    poison_token = inb.tokens.sentinel(9)
    unrepresentable = "q!" * 32 + "@" + ".".join(["d" * 60] * 3) + ".example"
    poison = mail(f"Poison <{unrepresentable}>", [inb.me], "Poison", f"Poison {poison_token}")
    normal = 4
    await inb.deliver([inb.mail(0), poison, *(inb.mail(i) for i in range(1, normal))], 0.2)
    await settle_inbound(inb, outcome, size, normal, restart_check=False)
    if not await _mentioned_anywhere(inb.user, poison_token):
        outcome.problems.append("the poison mail neither arrived nor was reported in any room")
    return outcome


async def _mentioned_anywhere(user: MatrixTestClient, token: str) -> bool:
    """Whether `token` is in a message body, or in a `message/rfc822` file, in any room the user
    is in or invited to (invites are accepted)."""
    await user.sync_once(timeout_ms=0)
    for room in [r for r in user.invites if r not in user.joined]:
        await user.join(room)
    for room in list(user.joined):
        for event in await room_history(user, room):
            if event.get("type") != "m.room.message":
                continue
            content = event["content"]
            if token in str(content.get("body", "")):
                return True
            mimetype = (content.get("info") or {}).get("mimetype")
            if content.get("url") and mimetype == "message/rfc822":
                if token.encode() in await user.download(content["url"]):
                    return True
    return False


# ---------------------------------------------------------------- mailbox and server faults

async def uidvalidity_change(ctx: FaultContext, size: Size) -> Outcome:
    """While the bridge is stopped, more new mail than backfill.max_messages arrives and the
    INBOX gets a new UIDVALIDITY: after the restart every new mail arrives once, the old ones
    are not posted again."""
    outcome = Outcome(f"UIDVALIDITY change while stopped ({ctx.database})")
    inb = await inbound_setup(ctx, **{"backfill.max_messages": size.backfill})
    before = 3
    await inb.deliver([inb.mail(i) for i in range(before)], 0.1)
    await wait_for_text(inb.user, inb.room, inb.tokens.text(before - 1), 30)
    await asyncio.to_thread(inb.bridge.stop)
    new = size.backfill * 2 + 2
    await inb.deliver([inb.mail(i) for i in range(before, before + new)], 0.05)
    await inbox_uids(ctx.mail, inb.me, inb.tokens, before + new, timeout=60)
    validity = await asyncio.to_thread(ctx.mail.new_uidvalidity, inb.me)
    outcome.facts["faults"] = (f"{new} mails arrived while stopped (backfill.max_messages "
                               f"{size.backfill}), new UIDVALIDITY {validity}")
    await asyncio.to_thread(inb.bridge.start)
    await settle_inbound(inb, outcome, size, before + new)
    return outcome


async def synapse_outage(ctx: FaultContext, size: Size) -> Outcome:
    """Mail keeps arriving while the homeserver is down for a while: all of it arrives once,
    in order, after the homeserver is back."""
    outcome = Outcome(f"homeserver down ({ctx.database})")
    inb = await inbound_setup(ctx)
    count = max(10, size.mails // 2)
    interval = (size.synapse_down_s + 4) / count

    async def outage() -> None:
        await asyncio.sleep(1.0)
        await asyncio.to_thread(ctx.synapse.stop)
        try:
            await asyncio.sleep(size.synapse_down_s)
        finally:  # the homeserver is shared with the rest of the session: always back up
            await asyncio.to_thread(ctx.synapse.start)

    ctx.say(f"homeserver down for {size.synapse_down_s:.0f} s while {count} mails arrive")
    await together(inb.deliver([inb.mail(i) for i in range(count)], interval), outage())
    outcome.facts["faults"] = f"homeserver stopped for {size.synapse_down_s:.0f} s"
    await settle_inbound(inb, outcome, size, count, restart_check=False)
    return outcome


async def dovecot_restart(ctx: FaultContext, size: Size) -> Outcome:
    """The IMAP server goes away for a while and comes back: the bridge reconnects within
    RECONNECT_WITHIN_S (mail delivered right after the restart shows up in Matrix), and nothing
    is lost or posted twice."""
    outcome = Outcome(f"IMAP server restart ({ctx.database})")
    inb = await inbound_setup(ctx)
    half = 5
    await inb.deliver([inb.mail(i) for i in range(half)], 0.1)
    await wait_for_text(inb.user, inb.room, inb.tokens.text(half - 1), 30)
    back_at = await asyncio.to_thread(ctx.mail.restart_dovecot, size.dovecot_down_s)
    await inb.deliver([inb.mail(half)])
    try:
        await wait_for_text(inb.user, inb.room, inb.tokens.text(half), RECONNECT_WITHIN_S)
        outcome.facts["mail after the restart in Matrix"] = f"{time.monotonic() - back_at:.1f} s"
    except TimeoutError:
        outcome.problems.append(
            f"mail delivered after the IMAP server came back ({size.dovecot_down_s:.0f} s down) "
            f"did not reach Matrix within {RECONNECT_WITHIN_S:.0f} s")
    outcome.facts["faults"] = f"Dovecot stopped for {size.dovecot_down_s:.0f} s"
    await inb.deliver([inb.mail(i) for i in range(half + 1, 2 * half)], 0.1)
    await settle_inbound(inb, outcome, size, 2 * half, restart_check=False)
    return outcome


Scenario = Callable[[FaultContext, Size], Awaitable[Outcome]]

# name -> (scenario, the databases it runs on)
SCENARIOS: dict[str, tuple[Scenario, tuple[str, ...]]] = {
    "inbound-kills": (inbound_kills, ("sqlite", "postgres")),
    "attachment-kills": (inbound_attachment_kills, ("sqlite", "postgres")),
    "postgres-terminate": (postgres_terminations, ("postgres",)),
    "outbound-kills": (outbound_kills, ("sqlite", "postgres")),
    "oversized-attachment": (oversized_attachment, ("sqlite",)),
    "uidvalidity": (uidvalidity_change, ("sqlite", "postgres")),
    "synapse-down": (synapse_outage, ("sqlite",)),
    "dovecot-restart": (dovecot_restart, ("sqlite",)),
    "poison-mail": (poison_mail, ("sqlite",)),
}
