"""Typed IMAP errors; `reason` is a short sentence that is safe to show to the user."""

from __future__ import annotations


class ImapError(Exception):
    """Base class. `transient` tells the sync engine whether retrying later can help."""

    transient = True

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ImapConfigError(ImapError, ValueError):
    """The account settings are unusable (e.g. plaintext IMAP to a remote host)."""

    transient = False


class ImapAuthFailed(ImapError):
    """The server rejected the username or password; retrying with the same ones is pointless."""

    transient = False


class ImapConnectFailed(ImapError):
    """No IMAP session could be established: refused, unreachable, DNS failure or timeout."""


class ImapConnectionLost(ImapConnectFailed):
    """An established session broke: closed by the server or the network, or a command timed out."""


class ImapCertificateError(ImapError):
    """The server's TLS certificate could not be verified."""


class ImapProtocolError(ImapError):
    """The server answered something unexpected, or refused a command."""


class ImapFolderError(ImapProtocolError):
    """A folder could not be opened or does not exist."""

    def __init__(self, folder: str, reason: str) -> None:
        super().__init__(reason)
        self.folder = folder
