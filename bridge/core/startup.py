"""Start-up checks that stop the bridge with one line naming the config key and the fix.

Each check turns the failure the operator can fix (a busy port, an unreachable homeserver, a
token or registration the homeserver does not share, a database that cannot be opened) into a
`ConfigError`; `python -m bridge` prints it as one line and exits 1. Anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import errno
import logging
import sqlite3
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web
from mautrix.errors import (
    MatrixConnectionError,
    MatrixRequestError,
    MatrixStandardRequestError,
    MExclusive,
    MUnknownToken,
)
from mautrix.util.async_db import Database

from ..network.errors import ConfigError

if TYPE_CHECKING:
    from mautrix.appservice import IntentAPI

    from .config import Config

log = logging.getLogger("letterbox.startup")

HOMESERVER_TIMEOUT_S = 15
PING_ATTEMPTS = 4
_REGISTER_AGAIN = ("write the registration again with `python -m bridge -g`, give it to the "
                   "homeserver (app_service_config_files) and restart the homeserver")
# Synapse's answer to an appservice acting as a user outside its namespaces.
_OUTSIDE_NAMESPACE = "cannot masquerade"


def redacted_url(url: str) -> str:
    """A database or server URL without its password, for the log and error lines."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


async def open_database(db: Database, url: str) -> None:
    try:
        await db.start()
    except (sqlite3.Error, OSError) as e:
        raise ConfigError("database.url", f"cannot open {redacted_url(url)} ({e}); check the path "
                          "or server and that the database exists") from None
    except Exception as e:
        if type(e).__module__.startswith("asyncpg"):
            raise ConfigError("database.url", f"cannot use {redacted_url(url)} ({e}); create the "
                              "database and check the user and password") from None
        raise


async def listen(site: web.TCPSite, host: str, port: int, section: str = "appservice") -> None:
    """Start listening; `section` names the config keys (appservice or provisioning)."""
    try:
        await site.start()
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise ConfigError(f"{section}.port", f"{host}:{port} is already in use; stop the other "
                              "program (another bridge?) or choose another port") from None
        if e.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(f"{section}.hostname", f"{host} is not an address of this machine; "
                              "use 127.0.0.1 or one of its addresses") from None
        if e.errno == errno.EACCES:
            raise ConfigError(f"{section}.port", f"no permission to listen on {host}:{port}; use "
                              "a port above 1023") from None
        raise ConfigError(f"{section}.hostname", f"cannot listen on {host}:{port} ({e})") from None


async def check_homeserver(config: Config, bot: IntentAPI, ghost_probe: IntentAPI,
                           hs_token_refusals: Callable[[], int]) -> None:
    """The bot can act, the ghosts' namespace is ours, and the homeserver reaches the bridge
    with our hs_token. `hs_token_refusals()` counts requests the intake refused."""
    address = config["homeserver.address"]
    try:
        async with asyncio.timeout(HOMESERVER_TIMEOUT_S):
            await _check_bot(config, bot)
            await _check_namespace(config, bot, ghost_probe)
    except TimeoutError:
        raise ConfigError("homeserver.address", f"{address} did not answer within "
                          f"{HOMESERVER_TIMEOUT_S} s; check the address and the homeserver") from None
    except MatrixConnectionError as e:
        raise ConfigError("homeserver.address", f"cannot reach {address} ({e}); check the address "
                          "and that the homeserver is running") from None
    await _ping(config, bot, hs_token_refusals)


async def _check_bot(config: Config, bot: IntentAPI) -> None:
    try:
        await bot.ensure_registered()
    except MUnknownToken:
        raise ConfigError("appservice.as_token", "the homeserver does not know this token; "
                          + _REGISTER_AGAIN) from None
    except MExclusive:
        raise ConfigError("appservice.bot_username", f"{bot.mxid} is not in the registration "
                          "the homeserver loaded; " + _REGISTER_AGAIN) from None
    except MatrixStandardRequestError as e:
        if e.http_status == 404:
            raise ConfigError("homeserver.address", f"{config['homeserver.address']} is not a "
                              "Matrix client-server API (404); check the address") from None
        raise ConfigError("appservice.as_token", f"the homeserver refused the bridge bot "
                          f"({e.errcode}: {e.message}); " + _REGISTER_AGAIN) from None


async def _check_namespace(config: Config, bot: IntentAPI, ghost_probe: IntentAPI) -> None:
    try:
        await ghost_probe.whoami()
    except MatrixStandardRequestError as e:
        if _OUTSIDE_NAMESPACE in e.message:
            raise ConfigError("appservice.username_template", f"ghosts like {ghost_probe.mxid} are "
                              "outside the registration the homeserver loaded; "
                              + _REGISTER_AGAIN) from None
        # Not registered yet: inside the namespace, which is all this asks.


async def _ping(config: Config, bot: IntentAPI, hs_token_refusals: Callable[[], int]) -> None:
    refused_before = hs_token_refusals()
    for attempt in range(1, PING_ATTEMPTS + 1):
        try:
            took = await bot.appservice_ping(config["appservice.id"])
        except MatrixRequestError as e:
            # Right after a restart the homeserver may try a pooled connection to the previous
            # process first: a failed connection is tried again a few times, quickly.
            if attempt < PING_ATTEMPTS and getattr(e, "errcode", None) == "M_CONNECTION_FAILED":
                log.info("The homeserver could not connect to the bridge yet; pinging again")
                await asyncio.sleep(0.5)
                continue
            _ping_failed(config, e, hs_token_refusals() > refused_before)
            return
        log.info("Homeserver reached the bridge in %d ms", took)
        return


def _ping_failed(config: Config, e: MatrixRequestError, token_refused: bool) -> None:
    """Raise the ConfigError a failed ping means (return when pings are not supported)."""
    errcode = getattr(e, "errcode", None)
    status = getattr(e, "http_status", 0)
    if errcode == "M_UNRECOGNIZED" or status == 404:
        log.warning("The homeserver cannot ping appservices (too old); not checked that it "
                    "reaches the bridge at %s", config["appservice.address"])
        return
    if token_refused:
        raise ConfigError("appservice.hs_token", "the homeserver calls the bridge with "
                          "another token (its ping was refused); " + _REGISTER_AGAIN) from None
    if errcode == "M_BAD_STATUS":
        raise ConfigError("appservice.address", "what answers at the URL of the homeserver's "
                          "registration is not this bridge; check appservice.address and port, "
                          "then " + _REGISTER_AGAIN) from None
    if errcode in ("M_CONNECTION_FAILED", "M_CONNECTION_TIMEOUT"):
        raise ConfigError("appservice.address", "the homeserver cannot reach the bridge at "
                          "the URL of its registration; check appservice.address, hostname "
                          "and port, then " + _REGISTER_AGAIN) from None
    if errcode == "M_FORBIDDEN":
        raise ConfigError("appservice.id", f"the homeserver has no appservice "
                          f"{config['appservice.id']!r} with this token; "
                          + _REGISTER_AGAIN) from None
    raise ConfigError("appservice.address", f"the homeserver could not ping the bridge "
                      f"({errcode or status})") from None
