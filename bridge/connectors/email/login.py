"""The email login flow: the address, then OAuth sign-in or a password, then the servers.

Both servers are tried before anything is saved; each kind of failure gets its own message.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ...network import (
    CompletedLogin,
    LoginFailed,
    LoginField,
    LoginProcess,
    LoginStep,
    LoginStepKind,
    RemoteAccountID,
)
from .addresses import InvalidAddress, address_key, parse_mailbox
from .discovery import Discovered
from .imap import ImapAccount, ImapAuthFailed, ImapError
from .imap import check_login as check_imap
from .imap.errors import ImapConnectFailed
from .login_problems import describe, describe_unreachable
from .oauth.authorize import AuthorizationRefused, PendingAuthorization, parse_answer
from .oauth.providers import OAuthProvider
from .oauth.tokens import OAuthTokens, TokenSet, exchange_code
from .outbound import clean_display_name
from .outbound.errors import ComposeError
from .outbound.smtp_submit import SmtpAccount, SmtpAuthFailed, SmtpConnectFailed, SmtpError
from .outbound.smtp_submit import check_login as check_smtp
from .password_page import PasswordRequest
from .sasl import BearerUnavailable
from .servers import ServerSpec, default_spec, parse_spec

if TYPE_CHECKING:
    from .connector import EmailConnector

log = logging.getLogger("letterbox.email.login")

PASSWORD_FIELD = "password"


def _password_field() -> LoginField:
    return LoginField(PASSWORD_FIELD, "Password", "your mail password or app password", secret=True)


class EmailLogin(LoginProcess):
    """Step 1: the address. Then either OAuth sign-in (a provider serves the address's domain) or
    a password and the IMAP and SMTP servers, defaulting from the domain."""

    def __init__(self, connector: EmailConnector, user_mxid: str) -> None:
        self.connector = connector
        self.user_mxid = user_mxid
        self.address = ""
        self.display_name = ""
        self.password = ""
        self.imap_spec: ServerSpec | None = None
        self.smtp_spec: ServerSpec | None = None
        self.provider: OAuthProvider | None = None
        self.pending: PendingAuthorization | None = None
        self.tokens: TokenSet | None = None
        self.discovered = Discovered()
        self.page: PasswordRequest | None = None
        self._name_default = ""

    async def start(self) -> LoginStep:
        return LoginStep(
            kind=LoginStepKind.USER_INPUT,
            step_id="address",
            instructions="Log in to your mailbox.",
            fields=[LoginField("address", "Email address", "the address you log in with")],
        )

    def prefill_fields(self) -> list[str]:
        return ["address", PASSWORD_FIELD, "name", "imap", "smtp"]

    async def submit(self, values: dict[str, str]) -> LoginStep:
        if "address" in values:
            return await self._address(values["address"], values.get("name"))
        if "redirect" in values:
            return await self._provider_answer(values["redirect"])
        if "imap" in values:
            self.imap_spec = parse_spec("imap", values["imap"])
            self.smtp_spec = parse_spec("smtp", values["smtp"])
            try:
                self.display_name = clean_display_name(values.get("name", ""), "name")
            except ComposeError as e:
                raise LoginFailed(f"That name cannot be used: {e.reason}", fields=("name",)) from None
        elif PASSWORD_FIELD in values:  # the password, or a new one after the servers refused it
            self._close_page()
            if not values[PASSWORD_FIELD]:
                raise LoginFailed("The password must not be empty.", fields=(PASSWORD_FIELD,))
            self.password = values[PASSWORD_FIELD]
            if self.imap_spec is None:
                return self._servers_step()
        return await self._check_servers()

    async def cancel(self) -> None:
        self._close_page()
        if self.pending is not None:
            self.connector.authorizations.drop(self.pending)
            self.pending = None

    async def _address(self, value: str, name: str | None) -> LoginStep:
        try:
            mailbox = parse_mailbox(value)
        except InvalidAddress as e:
            raise LoginFailed(f"That is not an email address: {e.reason}",
                              fields=("address",)) from None
        self.address = mailbox.addr
        self._name_default = (mailbox.name
                              or await self.connector.bridge.matrix_display_name(self.user_mxid)
                              or "")
        self.provider = self.connector.oauth_provider_for(mailbox.domain)
        if self.provider is None:
            self.discovered = await self.connector.discover(self.address, self.user_mxid)
            hosting = self.discovered.provider
            self.provider = self.connector.oauth_provider(hosting.id) if hosting else None
        if self.provider is not None:
            try:
                self.display_name = clean_display_name(name or self._name_default, "name")
            except ComposeError:
                self.display_name = ""
            return self._oauth_step(self.provider)
        return self._password_step()

    def _password_step(self) -> LoginStep:
        hosting = self.discovered.provider
        hint = f"\n{hosting.hint}" if hosting is not None and hosting.hint else ""
        return self._password_question("credentials", "App passwords work too." + hint)

    def _password_question(self, step_id: str, instructions: str) -> LoginStep:
        """Asks for the password in the chat, and on a one-time web page when there is one."""
        self._close_page()
        self.page = self.connector.password_pages.open(self.address, PASSWORD_FIELD)
        url = self.connector.password_page_url(self.page)
        if url is None:
            self._close_page()
        else:
            instructions += ("\nOr type it on a page of the bridge, so it never passes through "
                             f"Matrix: {url} (works once, for 10 minutes).")
        return LoginStep(kind=LoginStepKind.USER_INPUT, step_id=step_id, instructions=instructions,
                         fields=[_password_field()],
                         external=self.page.answer if self.page is not None else None)

    def _close_page(self) -> None:
        if self.page is not None:
            self.connector.password_pages.close(self.page)
            self.page = None

    def _servers_step(self) -> LoginStep:
        domain = self.address.rsplit("@", 1)[1]
        found = self.discovered
        imap = found.imap or default_spec("imap", domain)
        smtp = found.smtp or default_spec("smtp", domain)
        if found.found:
            intro = (f"Settings found ({found.source}): IMAP {imap}, SMTP {smtp}. Send `-` to "
                     "accept each, or type other servers as host:port:security (tls, starttls "
                     "or plain).")
        elif self.connector.config.discovery:
            intro = (f"No settings were found for {domain} (autoconfig file, DNS SRV and MX "
                     "records). Which servers? Format host:port:security (tls, starttls or "
                     "plain); the defaults are a guess.")
        else:
            intro = "Which servers? Format host:port:security (tls, starttls or plain)."
        return LoginStep(
            kind=LoginStepKind.USER_INPUT,
            step_id="servers",
            instructions=intro,
            fields=[
                LoginField("imap", "IMAP server", "for receiving", default=str(imap)),
                LoginField("smtp", "SMTP server", "for sending", default=str(smtp)),
                LoginField("name", "Your name", "shown beside your address in the mail you send",
                           default=self._name_default or None, optional=True),
            ],
        )

    # ---------------------------------------------------------------- OAuth
    def _oauth_step(self, provider: OAuthProvider) -> LoginStep:
        redirect_uri = self.connector.oauth_redirect_uri(provider)
        self.pending = self.connector.authorizations.begin(provider, redirect_uri, self.address)
        if self.connector.oauth_callback_url() is not None:
            after = "After you approve, this chat continues by itself."
        else:
            after = ("After you approve, your browser opens an address that does not load: copy "
                     "that whole address from the address bar and send it here.")
        return LoginStep(
            kind=LoginStepKind.USER_INPUT, step_id="oauth",
            instructions=(f"Sign in with {provider.name}: {self.pending.url}\n"
                          f"The link works once, for 10 minutes. {after} "
                          "Send `password` to use a password instead."),
            fields=[LoginField("redirect", "Address after signing in",
                               "the address your browser shows after you approved")],
            external=self.pending.callback,
        )

    async def _provider_answer(self, value: str) -> LoginStep:
        pending, provider = self.pending, self.provider
        if pending is None or provider is None:
            raise LoginFailed("No sign-in is in progress; send `login` again.", retry_step=False)
        if value.strip().lower() == "password":
            self.connector.authorizations.drop(pending)
            self.pending = self.provider = None
            return self._password_step()
        try:
            answer = parse_answer(value)
        except AuthorizationRefused as e:
            raise LoginFailed(e.reason) from None
        if self.connector.authorizations.claim(answer.state) is not pending:
            raise LoginFailed("That address belongs to another or an expired sign-in link. Send "
                              "the address of the link above, or `cancel` and `login` again.")
        self.pending = None
        try:
            self.tokens = await exchange_code(provider, pending.redirect_uri, answer.code,
                                              pending.verifier)
        except BearerUnavailable as e:
            pending.finish(f"Login failed: {e.reason}")
            raise LoginFailed(f"{e.reason}. Send `login` to try again.", retry_step=False) from None
        self.imap_spec, self.smtp_spec = provider.imap, provider.smtp
        try:
            step = await self._check_servers()
        except LoginFailed as e:
            pending.finish(f"Login failed: {e.reason}")
            raise LoginFailed(e.reason, retry_step=False) from None
        pending.finish(step.instructions if step.kind == LoginStepKind.COMPLETE
                       else "The mail servers did not accept the sign-in; see Matrix.")
        return step

    def _bearer(self) -> OAuthTokens | None:
        if self.tokens is None or self.provider is None:
            return None

        async def keep(tokens: TokenSet) -> None:
            self.tokens = tokens

        return OAuthTokens(self.provider, self.tokens, keep)

    async def _check_servers(self) -> LoginStep:
        imap_spec, smtp_spec = self.imap_spec, self.smtp_spec
        assert imap_spec is not None and smtp_spec is not None
        cfg = self.connector.config
        neutral = not self.connector.bridge.is_admin(self.user_mxid)
        if neutral:
            refused = [(kind, spec) for kind, spec in (("IMAP", imap_spec), ("SMTP", smtp_spec))
                       if not await cfg.server_policy.allows(spec)]
            if refused:
                log.info("Login of %s: refused server(s) %s (not public, not allowed)",
                         self.user_mxid, ", ".join(str(spec) for _, spec in refused))
                raise LoginFailed(
                    "\n" + "\n".join(describe_unreachable(k, s) for k, s in refused)
                    + "\nSend the server settings again.",
                    fields=tuple(k.lower() for k, _ in refused))
        bearer = self._bearer()
        try:
            imap = ImapAccount(imap_spec.host, imap_spec.port, imap_spec.security, self.address,
                               self.password, cfg.ca_file, cfg.timeout, bearer=bearer)
        except ImapError as e:
            raise LoginFailed("\n" + describe("IMAP", imap_spec, e), fields=("imap",)) from None
        smtp = SmtpAccount(smtp_spec.host, smtp_spec.port, smtp_spec.security,  # type: ignore[arg-type]
                           self.address, self.password, cfg.ca_file, cfg.timeout, bearer=bearer)
        imap_result, smtp_result = await asyncio.gather(check_imap(imap), check_smtp(smtp),
                                                        return_exceptions=True)
        problems = []
        failed: list[str] = []
        auth_failed = False
        for kind, spec, result in (("IMAP", imap_spec, imap_result), ("SMTP", smtp_spec, smtp_result)):
            if neutral and isinstance(result, (ImapConnectFailed, SmtpConnectFailed)):
                problems.append(describe_unreachable(kind, spec))
                failed.append(kind.lower())
            elif isinstance(result, (ImapError, SmtpError)):
                problems.append(describe(kind, spec, result))
                failed.append(kind.lower())
                auth_failed |= isinstance(result, (ImapAuthFailed, SmtpAuthFailed))
            elif isinstance(result, BaseException):
                raise result
        if bearer is not None and problems:
            raise LoginFailed("\n" + "\n".join(problems) + "\nSend `login` to sign in again.",
                              retry_step=False)
        if auth_failed:
            return self._password_question(
                "password", "Login failed:\n" + "\n".join(problems)
                + "\nSend the password again (or `cancel`, then `login` to use another address).")
        if problems:
            raise LoginFailed("\n" + "\n".join(problems) + "\nSend the server settings again.",
                              fields=tuple(failed))
        return self._complete(imap_spec, smtp_spec)

    def _complete(self, imap: ServerSpec, smtp: ServerSpec) -> LoginStep:
        bridge = self.connector.bridge
        metadata: dict[str, Any] = {
            "address": self.address,
            "display_name": self.display_name,
            "username": self.address,
            "imap": imap.to_json(),
            "smtp": smtp.to_json(),
        }
        if self.tokens is not None and self.provider is not None:
            metadata["oauth"] = {"provider": self.provider.id,
                                 "tokens": self.tokens.seal(bridge.encrypt_secret)}
        else:
            metadata["password"] = bridge.encrypt_secret(self.password)
        completed = CompletedLogin(
            account=RemoteAccountID(address_key(self.address)),
            remote_name=self.address,
            metadata=metadata,
        )
        return LoginStep(kind=LoginStepKind.COMPLETE, step_id="complete",
                         instructions=f"Logged in as {self.address}. New mail will appear in rooms.",
                         completed=completed)
