"""The rig's OAuth issuer as a server process of its own on a fixed port (the demo's).

Tests run the issuer in their own process (`MailStack` starts it on a free port); the demo's
stack outlives `python -m devstack up`, so its issuer does too: a PID file under the root, like
Synapse's, and its grants in a file under the root so a signed-in mailbox stays signed in.

python -m devstack.issuer_service serve --port N --state FILE   (what `IssuerService` starts)
"""

from __future__ import annotations

import argparse
from pathlib import Path
import sys

from .oauth_issuer import IssuerAddress, OAuthIssuer, issuer_url
from .ports import port_accepts
from .process import ServerProcess, ensure_ports_free

_REPO = Path(__file__).resolve().parent.parent


class IssuerService:
    """`python -m devstack.oauth_issuer serve` on 127.0.0.1:`port`, state under `root`."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = Path(root).resolve()
        self.port = port
        self.address = IssuerAddress(issuer_url(port))
        self.state_file = self.root / "oauth-issuer" / "grants.json"
        self.process = ServerProcess(
            "oauth-issuer", self.root / "run" / "oauth-issuer.pid", str(self.state_file),
            [self.root / "logs" / "oauth-issuer.log"],
        )

    def start(self) -> None:
        """Start the issuer; a no-op when it already runs (PID file). Returns once it listens."""
        if self.process.load_pid():
            return
        ensure_ports_free("oauth-issuer", [self.port])
        self.state_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.process.spawn(
            [sys.executable, "-m", "devstack.issuer_service", "serve", "--port", str(self.port),
             "--state", self.state_file],
            self.root / "logs" / "oauth-issuer.log",
            cwd=_REPO,
        )
        try:
            self.process.wait_ready(lambda: port_accepts(self.port), 20, f"listener on {self.port}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the issuer (idempotent); its grants stay in the state file."""
        self.process.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.issuer_service",
                                     description="the rig's OAuth issuer as a process of its own")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--port", type=int, required=True, help="loopback port to listen on")
    parser.add_argument("--state", type=Path, required=True,
                        help="file keeping grants and tokens across restarts")
    args = parser.parse_args(argv)
    issuer = OAuthIssuer(port=args.port, state_file=args.state.resolve())
    print(f"oauth issuer at {issuer_url(args.port)}", flush=True)
    issuer.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
