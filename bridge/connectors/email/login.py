"""The email login flow: address and password, then the servers (with domain defaults).

Both servers are tried before anything is saved; each kind of failure gets its own message.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ...network import (
    LoginAPI,
    LoginFailed,
    LoginField,
    LoginProcess,
    LoginStep,
    LoginStepKind,
    UserLoginID,
)
from .addresses import InvalidAddress, address_key, parse_mailbox
from .imap import ImapAccount, ImapAuthFailed, ImapError
from .imap import check_login as check_imap
from .login_problems import describe
from .outbound import clean_display_name
from .outbound.errors import ComposeError
from .outbound.smtp_submit import SmtpAccount, SmtpAuthFailed, SmtpError
from .outbound.smtp_submit import check_login as check_smtp
from .servers import ServerSpec, default_spec, parse_spec

if TYPE_CHECKING:
    from .connector import EmailConnector

PASSWORD_FIELD = "password"


def _password_field() -> LoginField:
    return LoginField(PASSWORD_FIELD, "Password", "your mail password or app password", secret=True)


class EmailLogin(LoginProcess):
    """Step 1: address + password. Step 2: IMAP and SMTP servers, defaulting from the domain."""

    def __init__(self, connector: EmailConnector, user_mxid: str) -> None:
        self.connector = connector
        self.user_mxid = user_mxid
        self.address = ""
        self.display_name = ""
        self.password = ""
        self.imap_spec: ServerSpec | None = None
        self.smtp_spec: ServerSpec | None = None

    async def start(self) -> LoginStep:
        return LoginStep(
            kind=LoginStepKind.USER_INPUT,
            step_id="credentials",
            instructions="Log in to your mailbox. App passwords work too.",
            fields=[
                LoginField("address", "Email address", "the address you log in with"),
                _password_field(),
            ],
        )

    def prefill_fields(self) -> list[str]:
        return ["address", "password", "name", "imap", "smtp"]

    async def submit(self, values: dict[str, str]) -> LoginStep:
        if "address" in values:
            return await self._credentials(values)
        if "imap" in values:
            self.imap_spec = parse_spec("imap", values["imap"])
            self.smtp_spec = parse_spec("smtp", values["smtp"])
            try:
                self.display_name = clean_display_name(values.get("name", ""), "name")
            except ComposeError as e:
                raise LoginFailed(f"That name cannot be used: {e.reason}", fields=("name",)) from None
        elif PASSWORD_FIELD in values:  # a new password after the servers refused the old one
            self.password = values[PASSWORD_FIELD]
        return await self._check_servers()

    async def _credentials(self, values: dict[str, str]) -> LoginStep:
        try:
            mailbox = parse_mailbox(values["address"])
        except InvalidAddress as e:
            raise LoginFailed(f"That is not an email address: {e.reason}",
                              fields=("address",)) from None
        if not values.get(PASSWORD_FIELD):
            raise LoginFailed("The password must not be empty.", fields=(PASSWORD_FIELD,))
        self.address = mailbox.addr
        self.password = values[PASSWORD_FIELD]
        name = mailbox.name or await self.connector.bridge.matrix_display_name(self.user_mxid) or ""
        domain = mailbox.domain
        return LoginStep(
            kind=LoginStepKind.USER_INPUT,
            step_id="servers",
            instructions="Which servers? Format host:port:security (tls, starttls or plain).",
            fields=[
                LoginField("imap", "IMAP server", "for receiving", default=str(default_spec("imap", domain))),
                LoginField("smtp", "SMTP server", "for sending", default=str(default_spec("smtp", domain))),
                LoginField("name", "Your name", "shown beside your address in the mail you send",
                           default=name or None, optional=True),
            ],
        )

    async def _check_servers(self) -> LoginStep:
        imap_spec, smtp_spec = self.imap_spec, self.smtp_spec
        assert imap_spec is not None and smtp_spec is not None
        cfg = self.connector.config
        try:
            imap = ImapAccount(imap_spec.host, imap_spec.port, imap_spec.security, self.address,
                               self.password, cfg.ca_file, cfg.timeout)
        except ImapError as e:
            raise LoginFailed("\n" + describe("IMAP", imap_spec, e), fields=("imap",)) from None
        smtp = SmtpAccount(smtp_spec.host, smtp_spec.port, smtp_spec.security,  # type: ignore[arg-type]
                           self.address, self.password, cfg.ca_file, cfg.timeout)
        imap_result, smtp_result = await asyncio.gather(check_imap(imap), check_smtp(smtp),
                                                        return_exceptions=True)
        problems = []
        failed: list[str] = []
        auth_failed = False
        for kind, spec, result in (("IMAP", imap_spec, imap_result), ("SMTP", smtp_spec, smtp_result)):
            if isinstance(result, (ImapError, SmtpError)):
                problems.append(describe(kind, spec, result))
                failed.append(kind.lower())
                auth_failed |= isinstance(result, (ImapAuthFailed, SmtpAuthFailed))
            elif isinstance(result, BaseException):
                raise result
        if auth_failed:
            return LoginStep(
                kind=LoginStepKind.USER_INPUT, step_id="password",
                instructions="Login failed:\n" + "\n".join(problems)
                + "\nSend the password again (or `cancel`, then `login` to use another address).",
                fields=[_password_field()],
            )
        if problems:
            raise LoginFailed("\n" + "\n".join(problems) + "\nSend the server settings again.",
                              fields=tuple(failed))
        return self._complete(imap_spec, smtp_spec)

    def _complete(self, imap: ServerSpec, smtp: ServerSpec) -> LoginStep:
        bridge = self.connector.bridge
        api = LoginAPI(
            login_id=UserLoginID(address_key(self.address)),
            user_mxid=self.user_mxid,
            remote_name=self.address,
            metadata={
                "address": self.address,
                "display_name": self.display_name,
                "username": self.address,
                "password": bridge.encrypt_secret(self.password),
                "imap": imap.to_json(),
                "smtp": smtp.to_json(),
            },
        )
        client = self.connector.make_client(api)
        return LoginStep(kind=LoginStepKind.COMPLETE, step_id="complete",
                         instructions=f"Logged in as {self.address}. New mail will appear in rooms.",
                         client=client)
