"""`python -m bridge --health`: ask a running bridge (of the same config) whether it is ready.

For container health checks: exit 0 when `/health/ready` of the metrics listener answers 200,
1 otherwise, with one line saying why. The address comes from the config (and its LETTERBOX_*
environment overrides), so the check never carries a copy of the port.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from .config import Config

_TIMEOUT_S = 5.0


def probe(config: Config) -> tuple[bool, str]:
    """(ready, one line for the operator)."""
    if not config["metrics.enabled"]:
        return False, ("the health endpoints are on the metrics listener: set metrics.enabled "
                       "(LETTERBOX_METRICS__ENABLED=true)")
    host = str(config["metrics.hostname"])
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    netloc = f"[{host}]" if ":" in host else host
    url = f"http://{netloc}:{config['metrics.port']}/health/ready"
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S):
            return True, f"ready ({url})"
    except urllib.error.HTTPError as e:
        try:
            reason = json.loads(e.read() or b"{}").get("reason", "")
        except ValueError:
            reason = ""
        return False, f"not ready: {reason or f'HTTP {e.code}'}"
    except (urllib.error.URLError, OSError) as e:
        return False, f"no answer from {url}: {getattr(e, 'reason', e)}"
