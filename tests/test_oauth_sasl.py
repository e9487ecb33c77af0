"""OAuth bearer logins (SASL OAUTHBEARER, XOAUTH2) on the real Dovecot and Postfix submission.

Dovecot's `oauth2` passdb asks the rig's issuer (devstack.oauth_issuer) about every token;
Postfix authenticates through Dovecot, so the same tokens work for sending.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from bridge.connectors.email.imap import ImapAccount, ImapAuthFailed, ImapConnectFailed
from bridge.connectors.email.imap.connection import ImapConnection
from bridge.connectors.email.outbound.smtp_submit import (
    SmtpAccount,
    SmtpAuthFailed,
    SmtpConnectFailed,
    check_login,
    submit,
)
from bridge.connectors.email.sasl import OAUTHBEARER, XOAUTH2, BearerUnavailable
from devstack.stack import MailStack
from tests.helpers.email_e2e import mail, wait_for_mail, with_subject

USER = "dave"


@dataclass
class FixedToken:
    """A BearerSource handing out one token (or failing like a refresh that went wrong)."""

    token: str = ""
    failure: BearerUnavailable | None = None
    calls: int = 0

    async def access_token(self) -> str:
        self.calls += 1
        if self.failure is not None:
            raise self.failure
        return self.token


def token_for(stack: MailStack, user: str = USER) -> FixedToken:
    return FixedToken(str(stack.issuer.issue_for(stack.address(user))["access_token"]))


def imap_account(stack: MailStack, source: FixedToken, *mechanisms: str) -> ImapAccount:
    return ImapAccount(stack.host, stack.imap_port, "starttls", stack.address(USER), "",
                       str(stack.ca_file), 5.0, bearer=source,
                       bearer_mechanisms=mechanisms or (OAUTHBEARER, XOAUTH2))


def smtp_account(stack: MailStack, source: FixedToken, *mechanisms: str) -> SmtpAccount:
    return SmtpAccount(stack.host, stack.submission_port, "starttls", stack.address(USER), "",
                       str(stack.ca_file), 5.0, bearer=source,
                       bearer_mechanisms=mechanisms or (OAUTHBEARER, XOAUTH2))


@pytest.mark.parametrize("mechanism", [OAUTHBEARER, XOAUTH2])
async def test_imap_logs_in_with_a_bearer_token(mail_stack: MailStack, mechanism: str) -> None:
    conn = await ImapConnection.open(imap_account(mail_stack, token_for(mail_stack), mechanism))
    try:
        assert conn.usable and "IDLE" in conn.capabilities  # capabilities of the logged-in state
    finally:
        await conn.close()


@pytest.mark.parametrize("mechanism", [OAUTHBEARER, XOAUTH2])
async def test_imap_refused_token_is_bad_credentials_without_waiting(
        mail_stack: MailStack, mechanism: str) -> None:
    account = imap_account(mail_stack, FixedToken("not-a-token"), mechanism)
    # the server's error challenge is answered: the refusal comes at once, not at the timeout
    with pytest.raises(ImapAuthFailed, match="sign-in token"):
        async with asyncio.timeout(3):
            await ImapConnection.open(account)


async def test_imap_revoked_grant_is_bad_credentials(mail_stack: MailStack) -> None:
    source = FixedToken(failure=BearerUnavailable("the sign-in was revoked", permanent=True))
    with pytest.raises(ImapAuthFailed, match="revoked"):
        await ImapConnection.open(imap_account(mail_stack, source))


async def test_imap_unreachable_provider_is_a_connection_failure(mail_stack: MailStack) -> None:
    source = FixedToken(failure=BearerUnavailable("the provider did not answer", permanent=False))
    with pytest.raises(ImapConnectFailed, match="did not answer"):
        await ImapConnection.open(imap_account(mail_stack, source))


@pytest.mark.parametrize("mechanism", [OAUTHBEARER, XOAUTH2])
async def test_smtp_submits_with_a_bearer_token(mail_stack: MailStack, mechanism: str) -> None:
    subject = f"bearer submission {mechanism}"
    sender = mail_stack.address(USER)
    raw = mail(sender, [mail_stack.address("carol")], subject, "sent with a token")
    result = await submit(raw, smtp_account(mail_stack, token_for(mail_stack), mechanism),
                          envelope_from=sender, recipients=[mail_stack.address("carol")])
    assert result.accepted == [mail_stack.address("carol")]
    await wait_for_mail(mail_stack, "carol", with_subject(subject))


@pytest.mark.parametrize("mechanism", [OAUTHBEARER, XOAUTH2])
async def test_smtp_refused_token_is_bad_credentials(mail_stack: MailStack, mechanism: str) -> None:
    with pytest.raises(SmtpAuthFailed, match="sign-in token"):
        await check_login(smtp_account(mail_stack, FixedToken("not-a-token"), mechanism))


async def test_smtp_unreachable_provider_is_a_connection_failure(mail_stack: MailStack) -> None:
    source = FixedToken(failure=BearerUnavailable("the provider did not answer", permanent=False))
    with pytest.raises(SmtpConnectFailed, match="did not answer"):
        await check_login(smtp_account(mail_stack, source))

