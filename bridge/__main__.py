"""Command line: `python -m bridge [-g] -c config.yaml -r registration.yaml` or a connector command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from pathlib import Path
import signal
import sys

from ruamel.yaml import YAML

from .connectors import load_connector
from .core.config import Config, ConfigError, compose_example, parse_yaml
from .core.files import private_file
from .core.registration import build_double_puppet_registration, build_registration
from .network import NetworkConnector

log = logging.getLogger("letterbox")

DEFAULT_CONNECTOR = "email"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bridge", description="Letterbox Matrix bridge")
    p.add_argument("-c", "--config", type=Path, default=Path("config.yaml"), help="config file")
    p.add_argument("-r", "--registration", type=Path, default=Path("registration.yaml"),
                   help="registration file to write with -g")
    p.add_argument("-g", "--generate-registration", action="store_true",
                   help="fill in tokens and keys in the config and write the registration")
    p.add_argument("--connector", default=None, help="connector for a new config (default: email)")
    p.add_argument("--print-example-config", action="store_true",
                   help="print the full example config and exit")
    p.add_argument("--health", action="store_true",
                   help="exit 0 if the bridge running with this config is ready, else 1 (for "
                        "container health checks; needs metrics.enabled)")
    return p


def _connector_name(config_path: Path, override: str | None) -> str:
    if override:
        return override
    if not config_path.exists():
        return DEFAULT_CONNECTOR
    data = parse_yaml(YAML(typ="safe"), config_path.read_text("utf-8"), config_path) or {}
    section = data.get("bridge") if isinstance(data, dict) else None
    if not isinstance(section, dict):
        raise ConfigError(f"{config_path}: bridge", "missing or not a mapping")
    return str(section.get("connector") or DEFAULT_CONNECTOR)


def example_for(connector: NetworkConnector) -> str:
    return compose_example(connector.name, connector.example_config())


def generate(args: argparse.Namespace, connector: NetworkConnector) -> int:
    example = example_for(connector)
    new = not args.config.exists()
    if new:
        args.config.write_text(example, "utf-8")
    config = Config.load(args.config, example)
    if new and args.connector:
        config["bridge.connector"] = args.connector
    config.generate_secrets()
    config.save()
    registration = build_registration(config)
    yaml = YAML()
    yaml.default_flow_style = False
    with args.registration.open("w", encoding="utf-8") as f:
        yaml.dump(registration, f)
    args.registration.chmod(0o600)
    if config["double_puppet.enabled"]:
        second = double_puppet_registration_path(args.registration)
        with second.open("w", encoding="utf-8") as f:
            yaml.dump(build_double_puppet_registration(config), f)
        second.chmod(0o600)
        print(f"Wrote {second} (double puppeting): add it to the homeserver's registrations too.")
    print(f"Wrote {args.registration}; tokens and keys are stored in {args.config}.")
    return 0


def double_puppet_registration_path(registration: Path) -> Path:
    return registration.with_name(f"{registration.stem}-doublepuppet{registration.suffix}")


def load_config(path: Path, connector: NetworkConnector) -> Config:
    config = Config.load(path, example_for(connector))
    config.apply_env()
    config.validate(connector.name)
    connector.validate_config(dict(config[f"network.{connector.name}"]))
    return config


async def _run(config: Config, connector: NetworkConnector) -> None:
    """Start, run until SIGTERM/SIGINT, stop. A signal during start-up stops it at once."""
    from .core.bridge import Bridge

    bridge = Bridge(config, connector)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.create_task(bridge.start(), name="start")
    signalled = asyncio.create_task(stop.wait(), name="signal")
    await asyncio.wait({starting, signalled}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        log.info("Stopping during start-up")
        starting.cancel()
        await asyncio.wait({starting})  # start() releases what it opened when cancelled
        return
    signalled.cancel()
    starting.result()  # a failed start raises here (ConfigError: one line from main)
    log.info("Letterbox %s started", bridge.version)
    await stop.wait()
    log.info("Stopping")
    await bridge.stop()


def setup_logging(level: str, file: str | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if file:
        handlers.append(logging.FileHandler(private_file(file), encoding="utf-8"))
    logging.basicConfig(level=level.upper(), handlers=handlers,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # aiosqlite logs every statement with its arguments at DEBUG: row data (mail, addresses)
    # that has no place in a log. mautrix's own database logger names the slow queries.
    logging.getLogger("aiosqlite").setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Everything the bridge writes (database, log, generated config) is for its user only.
    os.umask(0o077)
    # Connector sub-commands, e.g. `python -m bridge preview FILE.eml --json`.
    if argv and not argv[0].startswith("-"):
        connector = load_connector(DEFAULT_CONNECTOR)
        commands = connector.cli_commands()
        if argv[0] not in commands:
            print(f"unknown command {argv[0]!r}; known: {', '.join(commands) or 'none'}", file=sys.stderr)
            return 2
        return commands[argv[0]](argv[1:])
    args = _parser().parse_args(argv)
    try:
        name = _connector_name(args.config, args.connector)
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 1
    try:
        connector = load_connector(name)
    except (ImportError, AttributeError, ValueError, TypeError) as e:
        print(f"config error: bridge.connector: {e}", file=sys.stderr)
        return 1
    if args.print_example_config:
        print(example_for(connector), end="")
        return 0
    try:
        if args.generate_registration:
            return generate(args, connector)
        config = load_config(args.config, connector)
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 1
    if args.health:
        from .core.health_probe import probe

        ready, line = probe(config)
        print(line, file=sys.stdout if ready else sys.stderr)
        return 0 if ready else 1
    setup_logging(str(config["logging.level"]), config["logging.file"])
    config.report_unknown()
    try:
        asyncio.run(_run(config, connector))
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
