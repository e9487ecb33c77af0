"""Config generation, round-trip, validation and environment overrides; the registration file."""

from __future__ import annotations

from pathlib import Path
import re

import pytest
from ruamel.yaml import YAML

from bridge.__main__ import example_for, load_config, main
from bridge.connectors import load_connector
from bridge.core.config import Config, ConfigError
from bridge.core.registration import build_registration

LOOPBACK = "tests.helpers.loopback_connector:LoopbackConnector"


@pytest.fixture
def generated(tmp_path: Path) -> tuple[Path, Path]:
    config, registration = tmp_path / "config.yaml", tmp_path / "registration.yaml"
    assert main(["-g", "-c", str(config), "-r", str(registration), "--connector", LOOPBACK]) == 0
    return config, registration


def test_generate_writes_tokens_and_registration(generated: tuple[Path, Path]) -> None:
    config_path, reg_path = generated
    reg = YAML(typ="safe").load(reg_path.read_text())
    cfg = YAML(typ="safe").load(config_path.read_text())
    assert reg["as_token"] == cfg["appservice"]["as_token"] != "generate"
    assert reg["hs_token"] == cfg["appservice"]["hs_token"] != reg["as_token"]
    assert len(reg["hs_token"]) >= 40
    users = [ns["regex"] for ns in reg["namespaces"]["users"]]
    assert r"@email_.*:example\.org" in users  # domain dot escaped
    assert all(ns["exclusive"] for ns in reg["namespaces"]["users"] + reg["namespaces"]["aliases"])
    assert reg["namespaces"]["aliases"][0]["regex"] == r"#email_.*:example\.org"
    assert re.fullmatch(users[0], "@email_alice=40test.local:example.org")
    assert not re.fullmatch(users[0], "@email_alice:example.org.evil")
    assert reg["sender_localpart"] == "letterboxbot"
    assert reg_path.stat().st_mode & 0o077 == 0


def test_generate_keeps_comments_and_existing_tokens(generated: tuple[Path, Path]) -> None:
    config_path, reg_path = generated
    first = YAML(typ="safe").load(config_path.read_text())["appservice"]["as_token"]
    text = config_path.read_text()
    assert "# Where the bridge listens." in text
    config_path.write_text(text.replace("level: INFO", "level: DEBUG  # my own comment"))
    assert main(["-g", "-c", str(config_path), "-r", str(reg_path), "--connector", LOOPBACK]) == 0
    again = config_path.read_text()
    assert "# my own comment" in again and "# Where the bridge listens." in again
    assert YAML(typ="safe").load(again)["appservice"]["as_token"] == first


def test_validate_names_the_key(generated: tuple[Path, Path]) -> None:
    config_path, _ = generated
    connector = load_connector(LOOPBACK)
    load_config(config_path, connector)  # valid as generated
    text = config_path.read_text()
    config_path.write_text(text.replace("port: 29400", "port: lots"))
    with pytest.raises(ConfigError, match=r"appservice\.port"):
        load_config(config_path, connector)
    config_path.write_text(re.sub(r"\n    domain: example.org", "\n", text))
    with pytest.raises(ConfigError, match=r"homeserver\.domain"):
        load_config(config_path, connector)


def test_cli_reports_one_line_for_a_bad_option(generated: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    config_path, _ = generated
    config_path.write_text(re.sub(r"(['\"]\*['\"]): relay", r"\1: superuser", config_path.read_text()))
    assert main(["-c", str(config_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bridge.permissions.*" in err


@pytest.mark.parametrize("generate", [False, True])
def test_cli_reports_one_line_for_a_config_that_is_not_yaml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], generate: bool
) -> None:
    """Not read as "no connector named, so email": the broken file is named, without a traceback."""
    broken = tmp_path / "config.yaml"
    broken.write_text("bridge: [connector: loopback\n")
    extra = ["-g", "-r", str(tmp_path / "registration.yaml")] if generate else []
    assert main([*extra, "-c", str(broken)]) == 1
    err = capsys.readouterr().err
    assert f"{broken}: not valid YAML" in err and "Traceback" not in err
    assert broken.read_text() == "bridge: [connector: loopback\n"


def test_unknown_keys_are_reported_not_dropped(generated: tuple[Path, Path]) -> None:
    config_path, _ = generated
    config_path.write_text(config_path.read_text().replace("logging:\n", "logging:\n    colour: true\n"))
    config = Config.load(config_path, example_for(load_connector(LOOPBACK)))
    assert config.unknown_keys == ["logging.colour"]
    assert "colour: true" in config.dump()


def test_environment_overrides_secrets(generated: tuple[Path, Path]) -> None:
    config_path, _ = generated
    config = Config.load(config_path, example_for(load_connector(LOOPBACK)))
    config.apply_env({"LETTERBOX_APPSERVICE__HS_TOKEN": "from-env", "LETTERBOX_APPSERVICE__PORT": "1234",
                      "UNRELATED": "x"})
    assert config["appservice.hs_token"] == "from-env"
    assert config["appservice.port"] == 1234


def test_registration_escapes_templates(generated: tuple[Path, Path]) -> None:
    config_path, _ = generated
    config = Config.load(config_path, example_for(load_connector(LOOPBACK)))
    config["homeserver.domain"] = "matrix.example.gov"
    config["appservice.username_template"] = "mail+{userid}"
    reg = build_registration(config)
    assert reg["namespaces"]["users"][0]["regex"] == r"@mail\+.*:matrix\.example\.gov"


def test_example_config_file_matches_the_code() -> None:
    """The top-level config.example.yaml is the composed example of the email connector."""
    shipped = (Path(__file__).parent.parent / "config.example.yaml").read_text()
    assert shipped == example_for(load_connector("email"))


def test_options_added_since_the_config_was_written_take_the_example_value(
    generated: tuple[Path, Path],
) -> None:
    """A config from an older version (no provisioning, metrics or encryption sections) starts
    with the defaults of today's example, and says which options it took from there."""
    config_path, _ = generated
    data = YAML().load(config_path.read_text())
    for section in ("provisioning", "metrics", "encryption"):
        del data[section]
    with config_path.open("w") as f:
        YAML().dump(data, f)
    config = load_config(config_path, load_connector(LOOPBACK))
    assert config["provisioning.enabled"] is False
    assert config["metrics.port"] == 29402
    assert config["encryption.allow"] is True
    assert {"provisioning", "metrics", "encryption"} <= set(config.defaulted)


def test_where_and_who_the_bridge_is_are_never_defaulted(generated: tuple[Path, Path]) -> None:
    config_path, _ = generated
    data = YAML().load(config_path.read_text())
    del data["appservice"]["hs_token"]
    with config_path.open("w") as f:
        YAML().dump(data, f)
    with pytest.raises(ConfigError, match=r"appservice\.hs_token"):
        load_config(config_path, load_connector(LOOPBACK))


def test_workers_are_refused_on_sqlite(generated: tuple[Path, Path]) -> None:
    """Several worker processes coordinate through PostgreSQL; SQLite stays single-process."""
    config_path, _ = generated
    text = config_path.read_text()
    assert "sqlite:" in text
    config_path.write_text(text.replace("workers:\n    enabled: false", "workers:\n    enabled: true"))
    with pytest.raises(ConfigError, match=r"workers\.enabled.*SQLite is single-process"):
        load_config(config_path, load_connector(LOOPBACK))
