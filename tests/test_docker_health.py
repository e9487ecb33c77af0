"""The Docker image's settings and health check, played against a running bridge (no Docker
engine here: the Dockerfile's ENV and HEALTHCHECK lines are read and run as they would be)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
import re
import shlex
import sys

import pytest

from devstack.ports import free_port
from tests.helpers.harness import start_bridge

pytestmark = pytest.mark.servers

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = (REPO / "Dockerfile").read_text()


def dockerfile_env() -> dict[str, str]:
    """The ENV instructions (backslash-continued `KEY=value` pairs)."""
    joined = DOCKERFILE.replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in joined.splitlines():
        if line.startswith("ENV "):
            env.update(pair.split("=", 1) for pair in shlex.split(line[4:]))
    return env


def healthcheck_command() -> list[str]:
    joined = DOCKERFILE.replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])$", joined, re.MULTILINE)
    assert match, "the Dockerfile has no HEALTHCHECK in exec form"
    command: list[str] = json.loads(match.group(1))
    return command


async def run_check(config: Path, env: dict[str, str]) -> tuple[int, str]:
    command = healthcheck_command()
    assert command[:3] == ["python", "-m", "bridge"] and "-c" in command
    args = [*command[3:]]
    args[args.index("-c") + 1] = str(config)  # /data/config.yaml in the image
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", *args, cwd=REPO, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def test_the_image_listens_beyond_the_container_loopback() -> None:
    assert dockerfile_env()["LETTERBOX_APPSERVICE__HOSTNAME"] == "0.0.0.0"


@pytest.fixture
def image_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The image's environment, on loopback ports of this machine (tests never listen on
    0.0.0.0): what the bridge and its health check read."""
    env = {k: v for k, v in dockerfile_env().items() if k != "LETTERBOX_APPSERVICE__HOSTNAME"}
    env["LETTERBOX_METRICS__PORT"] = str(free_port())
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


async def test_the_health_check_passes_while_the_bridge_is_ready(
    bridge_config: Path, image_env: dict[str, str]
) -> None:
    bridge = await start_bridge(bridge_config)
    try:
        code, out = await run_check(bridge_config, image_env)
    finally:
        await bridge.stop()
    assert code == 0, out
    assert "ready" in out


async def test_the_health_check_fails_with_a_reason_when_no_bridge_answers(
    bridge_config: Path, image_env: dict[str, str]
) -> None:
    code, out = await run_check(bridge_config, image_env)
    assert code == 1
    assert "no answer from http://127.0.0.1:" in out
