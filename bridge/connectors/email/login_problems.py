"""What a failed server check at login tells the user: what went wrong, then what to do."""

from __future__ import annotations

from .imap import ImapError
from .imap.errors import (
    ImapAuthFailed,
    ImapCertificateError,
    ImapConfigError,
    ImapConnectFailed,
    ImapProtocolError,
)
from .outbound.smtp_submit import (
    SmtpAuthFailed,
    SmtpCertificateError,
    SmtpConfigError,
    SmtpConnectFailed,
    SmtpError,
    SmtpTlsError,
)
from .server_policy import UNREACHABLE
from .servers import ServerSpec

_CERTIFICATE = ("→ The bridge does not trust this server's certificate. If the host name is right, "
                "ask the bridge admin to add the server's CA to `network.email.ca_file`.")
_AUTH = ("→ Check the address and the password; many providers need an app password "
         "for IMAP and SMTP.")
_CONNECT = "→ Check the host name and the port; the server must be reachable from the bridge."
_TLS = "→ Check the security: `tls` (usually ports 993 and 465) or `starttls` (143 and 587)."
_CONFIG = "→ Check the server settings; if the message names a file, tell the bridge admin."
_PROTOCOL = "→ Check that this host and port are the mail server's."


def hint(error: ImapError | SmtpError) -> str:
    if isinstance(error, (ImapCertificateError, SmtpCertificateError)):
        return _CERTIFICATE
    if isinstance(error, (ImapAuthFailed, SmtpAuthFailed)):
        return _AUTH
    if isinstance(error, (ImapConnectFailed, SmtpConnectFailed)):
        return _CONNECT
    if isinstance(error, SmtpTlsError):
        return _TLS
    if isinstance(error, (ImapConfigError, SmtpConfigError)):
        return _CONFIG
    if isinstance(error, ImapProtocolError):
        return _PROTOCOL
    return _CONFIG


def describe(kind: str, spec: ServerSpec, error: ImapError | SmtpError) -> str:
    """Two lines: the failure as the server check saw it, and the next step."""
    return f"{kind} ({spec}): {error.reason}\n{hint(error)}"


def describe_unreachable(kind: str, spec: ServerSpec) -> str:
    """The one answer for a server that is refused by the bridge's server rules or cannot be
    reached (for users who are not admins: nothing tells one from the other)."""
    return f"{kind} ({spec}): {UNREACHABLE}\n{_CONNECT}"
