"""Submit a composed mail to the user's SMTP server (aiosmtplib) and classify what happened.

TLS certificates are always verified. Plain-text SMTP is only allowed to a loopback address.
Every failure becomes a typed `SmtpError` with the server's reply and a user-facing `reason`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import EmailMessage
import ipaddress
import logging
import ssl
from typing import Any

import aiosmtplib
from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPException,
    SMTPNotSupported,
    SMTPRecipientsRefused,
    SMTPResponse,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from aiosmtplib.typing import Default

from ..sasl import (
    BEARER_MECHANISMS,
    BearerSource,
    BearerUnavailable,
    choose_mechanism,
    failure_reply,
    initial_response,
)
from ..security import SECURITY_MODES, SECURITY_MODES_TEXT, Security

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SmtpAccount:
    """Where and as whom to submit mail. `ca_file` adds a trusted CA (else the system store).

    With `bearer`, the login is OAuth 2.0 (SASL OAUTHBEARER or XOAUTH2, the first of
    `bearer_mechanisms` the server offers) and `password` is unused.
    """

    host: str
    port: int
    security: Security
    username: str
    password: str = field(repr=False)
    ca_file: str | None = None
    timeout: float = 30.0
    bearer: BearerSource | None = field(default=None, repr=False, compare=False)
    bearer_mechanisms: tuple[str, ...] = BEARER_MECHANISMS


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """Accepted recipients, refused ones (address -> (code, text)), the server's reply to DATA."""

    accepted: list[str]
    refused: dict[str, tuple[int, str]]
    reply: str

    @property
    def transient_refused(self) -> dict[str, tuple[int, str]]:
        return {a: r for a, r in self.refused.items() if 400 <= r[0] < 500}

    @property
    def permanent_refused(self) -> dict[str, tuple[int, str]]:
        return {a: r for a, r in self.refused.items() if not 400 <= r[0] < 500}


class SmtpError(Exception):
    """Base class; `reason` is safe to show to the user, `code`/`text` are the server's reply."""

    def __init__(self, reason: str, *, code: int | None = None, text: str = "") -> None:
        said = " ".join(p for p in (str(code) if code else "", text) if p)
        super().__init__(f"{reason} (server said: {said})" if said else reason)
        self.reason = reason
        self.code = code
        self.text = text


class SmtpConfigError(SmtpError):
    """The account settings are not usable (e.g. unencrypted SMTP to a remote host)."""


class SmtpConnectFailed(SmtpError):
    """The server could not be reached: refused, unreachable, timed out, or it hung up."""


class SmtpTlsError(SmtpError):
    """TLS could not be established (handshake failure, STARTTLS not offered)."""


class SmtpCertificateError(SmtpTlsError):
    """The server's certificate was not trusted or did not match the host name."""


class SmtpAuthFailed(SmtpError):
    """The server rejected the login (or offers no login at all)."""


class _DeliveryError(SmtpError):
    def __init__(
        self,
        reason: str,
        *,
        code: int | None,
        text: str,
        recipients: list[str],
        refused: dict[str, tuple[int, str]] | None = None,
    ) -> None:
        super().__init__(reason, code=code, text=text)
        self.recipients = recipients
        self.refused = refused or {}


class SmtpTransient(_DeliveryError):
    """A temporary failure (4xx, timeout, connection lost): sending again later may work.

    `before_data`: the session broke (lost, timed out, 421) before the DATA command was given,
    so the server cannot have taken the mail and sending it at once on a new session is safe.
    """

    before_data: bool = False


class SmtpPermanent(_DeliveryError):
    """A permanent failure (5xx): sending the same mail again will fail again."""


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _tls_context(account: SmtpAccount) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=account.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise SmtpConfigError(f"the CA file {account.ca_file!r} cannot be used: {exc}") from exc


def _find_cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _tls_failure(exc: BaseException, account: SmtpAccount) -> SmtpError | None:
    cert = _find_cause(exc, ssl.SSLCertVerificationError)
    if cert is not None:
        detail = getattr(cert, "verify_message", "") or str(cert)
        return SmtpCertificateError(
            f"the certificate of {account.host} is not trusted ({detail})", text=str(cert)
        )
    other = _find_cause(exc, ssl.SSLError)
    if other is not None:
        return SmtpTlsError(f"TLS with {account.host} failed: {other}", text=str(other))
    return None


def _connect_failure(exc: BaseException, account: SmtpAccount) -> SmtpError:
    tls = _tls_failure(exc, account)
    if tls is not None:
        return tls
    where = f"{account.host}:{account.port}"
    if isinstance(exc, SMTPResponseException):  # a 4xx/5xx greeting instead of 220
        if 400 <= exc.code < 500:
            return SmtpTransient(
                f"{where} is not accepting connections right now",
                code=exc.code,
                text=exc.message,
                recipients=[],
            )
        return SmtpConnectFailed(f"{where} refused the session", code=exc.code, text=exc.message)
    if isinstance(exc, SMTPTimeoutError):
        return SmtpConnectFailed(f"timed out connecting to {where}", text=str(exc))
    return SmtpConnectFailed(f"cannot connect to {where}", text=str(exc))


def _check_account(account: SmtpAccount) -> None:
    if account.security not in SECURITY_MODES:
        raise SmtpConfigError(
            f"unknown SMTP security mode {account.security!r} (use one of {SECURITY_MODES_TEXT})")
    if account.security == "plain" and not _is_loopback(account.host):
        raise SmtpConfigError(
            "unencrypted SMTP is only allowed to this machine; use TLS or STARTTLS"
        )
    if not account.username:
        raise SmtpConfigError("a user name is required: the bridge always logs in to send mail")


class SmtpSession(aiosmtplib.SMTP):
    """An aiosmtplib client that notes whether the current transaction reached DATA, and the
    access token it logged in with (OAuth logins)."""

    data_issued = False
    bearer_token: str | None = None

    async def data(self, message: str | bytes, /, *, timeout: Any = Default.token) -> SMTPResponse:
        self.data_issued = True
        return await super().data(message, timeout=timeout)


async def open_session(account: SmtpAccount) -> SmtpSession:
    """Connect, secure the connection and log in; the caller must close the returned session."""
    _check_account(account)
    context = _tls_context(account) if account.security != "plain" else None
    client = SmtpSession(
        hostname=account.host,
        port=account.port,
        timeout=account.timeout,
        use_tls=account.security == "tls",
        # STARTTLS is done explicitly below: a missing STARTTLS is an error, never a downgrade
        start_tls=False,
        validate_certs=True,
        tls_context=context,
    )
    try:
        await client.connect()
    except (SMTPException, OSError) as exc:
        raise _connect_failure(exc, account) from exc
    try:
        if account.security == "starttls":
            await _starttls(client, account)
        await _login(client, account)
    except BaseException:
        client.close()
        raise
    return client


async def _starttls(client: SmtpSession, account: SmtpAccount) -> None:
    try:
        await client.ehlo()
        if not client.supports_extension("starttls"):
            raise SmtpTlsError(f"{account.host} does not offer STARTTLS")
        await client.starttls()
    except SmtpError:
        raise
    except (SMTPException, OSError) as exc:
        failure = _tls_failure(exc, account)
        if failure is not None:
            raise failure from exc
        if isinstance(exc, SMTPResponseException):
            raise SmtpTlsError(
                f"{account.host} refused STARTTLS", code=exc.code, text=exc.message
            ) from exc
        raise SmtpConnectFailed(
            f"the connection to {account.host} broke during STARTTLS", text=str(exc)
        ) from exc


async def _login(client: SmtpSession, account: SmtpAccount) -> None:
    try:
        await client.ehlo()
        if not client.supports_extension("auth"):
            raise SmtpAuthFailed(f"{account.host} does not offer a login (SMTP AUTH)")
        await _authenticate(client, account)
    except SmtpError:
        raise
    except SMTPAuthenticationError as exc:
        if 400 <= exc.code < 500:
            raise SmtpTransient(
                "the server could not check the password right now",
                code=exc.code,
                text=exc.message,
                recipients=[],
            ) from exc
        raise SmtpAuthFailed(
            "the server rejected the sign-in token" if account.bearer else
            "the server rejected the user name or password", code=exc.code, text=exc.message
        ) from exc
    except SMTPResponseException as exc:
        raise SmtpAuthFailed("logging in failed", code=exc.code, text=exc.message) from exc
    except (SMTPServerDisconnected, SMTPTimeoutError, OSError) as exc:
        raise SmtpConnectFailed(
            f"the connection to {account.host} broke while logging in", text=str(exc)
        ) from exc
    except SMTPException as exc:
        raise SmtpAuthFailed(f"cannot log in: {exc.message}", text=exc.message) from exc


async def _authenticate_bearer(client: SmtpSession, account: SmtpAccount) -> None:
    assert account.bearer is not None
    offered = {m.upper() for m in client.server_auth_methods}
    mechanism = choose_mechanism(offered, account.bearer_mechanisms)
    if mechanism is None:
        raise SmtpAuthFailed(
            f"{account.host} offers no OAuth login ({', '.join(account.bearer_mechanisms)})")
    try:
        token = await account.bearer.access_token()
        first = initial_response(mechanism, account.username, token)
    except BearerUnavailable as exc:
        if exc.permanent:
            raise SmtpAuthFailed(exc.reason) from None
        raise SmtpConnectFailed(exc.reason) from None
    response = await client.execute_command(b"AUTH", mechanism.encode(), first.encode())
    if response.code == 334:  # the error details as a challenge; the answer gets the final reply
        response = await client.execute_command(failure_reply(mechanism).encode())
    if response.code != 235:
        raise SMTPAuthenticationError(response.code, response.message)
    client.bearer_token = token


async def _authenticate(client: SmtpSession, account: SmtpAccount) -> None:
    """Try the mechanisms both sides support; stop at the first 535 (wrong credentials), since
    other mechanisms with the same password fail the same way and each try costs server delay."""
    if account.bearer is not None:
        await _authenticate_bearer(client, account)
        return
    methods = client.supported_auth_methods
    if not methods:
        raise SmtpAuthFailed(
            f"{account.host} offers no login method this bridge supports "
            f"({', '.join(sorted(client.server_auth_methods)) or 'none'})"
        )
    for index, method in enumerate(methods):
        try:
            await getattr(client, "auth_" + method.replace("-", ""))(
                account.username, account.password
            )
            return
        except SMTPAuthenticationError as exc:
            if exc.code == 535 or index == len(methods) - 1:
                raise


async def close_session(client: aiosmtplib.SMTP) -> None:
    """QUIT (errors ignored) and close the connection."""
    try:
        await client.quit()
    except (SMTPException, OSError) as exc:
        # The transaction is already over; a failed QUIT changes nothing for the caller.
        log.debug("QUIT failed: %s", exc)
    finally:
        client.close()


def _code_class(code: int | None) -> type[_DeliveryError]:
    return SmtpTransient if code is None or 400 <= code < 500 else SmtpPermanent


async def transaction(
    client: SmtpSession, message: EmailMessage | bytes, envelope_from: str, recipients: list[str]
) -> SubmitResult:
    """One mail on an open session; raises an SmtpError subclass if the server took it for
    nobody. A refused transaction leaves the session usable (aiosmtplib sends RSET)."""
    client.data_issued = False
    try:
        return await _attempt(client, message, envelope_from, recipients)
    except SmtpTransient as exc:
        lost = not client.is_connected or exc.code == 421
        exc.before_data = lost and not client.data_issued
        raise


async def _attempt(
    client: SmtpSession, message: EmailMessage | bytes, envelope_from: str, recipients: list[str]
) -> SubmitResult:
    try:
        if isinstance(message, bytes):  # stored bytes go out exactly as they are
            errors, reply = await client.sendmail(envelope_from, recipients, message)
        else:
            errors, reply = await client.send_message(
                message, sender=envelope_from, recipients=recipients
            )
    except SMTPRecipientsRefused as exc:
        refused = {e.recipient: (e.code, e.message) for e in exc.recipients}
        first = exc.recipients[0]
        transient = any(400 <= code < 500 for code, _ in refused.values())
        kind = SmtpTransient if transient else SmtpPermanent
        names = ", ".join(refused)
        raise kind(
            f"the server refused the recipient{'s' if len(refused) > 1 else ''} {names}",
            code=first.code,
            text=first.message,
            recipients=list(refused),
            refused=refused,
        ) from exc
    except aiosmtplib.SMTPSenderRefused as exc:
        raise _code_class(exc.code)(
            f"the server refused the sender address {exc.sender}",
            code=exc.code,
            text=exc.message,
            recipients=list(recipients),
        ) from exc
    except aiosmtplib.SMTPDataError as exc:
        raise _code_class(exc.code)(
            "the server refused the message",
            code=exc.code,
            text=exc.message,
            recipients=list(recipients),
        ) from exc
    except SMTPNotSupported as exc:
        raise SmtpPermanent(
            f"the server cannot take this mail: {exc.message}",
            code=None,
            text=exc.message,
            recipients=list(recipients),
        ) from exc
    except SMTPResponseException as exc:
        raise _code_class(exc.code)(
            "the server refused the mail",
            code=exc.code,
            text=exc.message,
            recipients=list(recipients),
        ) from exc
    except (SMTPServerDisconnected, SMTPTimeoutError, SMTPConnectError, OSError) as exc:
        raise SmtpTransient(
            "the connection to the mail server was lost while sending",
            code=None,
            text=str(exc),
            recipients=list(recipients),
        ) from exc
    except ValueError as exc:  # aiosmtplib refuses addresses that could inject SMTP commands
        raise SmtpPermanent(str(exc), code=None, text="", recipients=list(recipients)) from exc
    refused = {addr: (resp.code, resp.message) for addr, resp in errors.items()}
    accepted = [r for r in recipients if r not in refused]
    return SubmitResult(accepted=accepted, refused=refused, reply=reply)


async def submit(
    message: EmailMessage | bytes, account: SmtpAccount, *, envelope_from: str, recipients: list[str]
) -> SubmitResult:
    """Send `message` to `recipients` (the envelope; Bcc goes here only) via `account`.

    Returns which recipients were accepted and which refused if the server took the mail for at
    least one; raises an SmtpError subclass otherwise.
    """
    if not recipients:
        raise ValueError("at least one recipient is required")
    client = await open_for(account, recipients)
    try:
        return await transaction(client, message, envelope_from, list(recipients))
    finally:
        await close_session(client)


async def open_for(account: SmtpAccount, recipients: list[str]) -> SmtpSession:
    """open_session for sending to `recipients`: a delivery error names them all."""
    try:
        return await open_session(account)
    except _DeliveryError as exc:
        exc.recipients = exc.recipients or list(recipients)  # nothing was attempted for anyone
        raise


async def check_login(account: SmtpAccount) -> None:
    """Connect, secure and log in without sending anything; raises an SmtpError on failure."""
    client = await open_session(account)
    await close_session(client)
