"""Whether a run may reach the Hugging Face hub, decided once at start-up, before huggingface_hub is imported (it
reads HF_HUB_OFFLINE once, at import).

HF_HUB_OFFLINE set by the user wins. Unset, the hub is probed with one TCP connection to HF_ENDPOINT (3 s): where it
cannot be reached (a machine without internet whose caches were filled beforehand), the run goes offline
(HF_HUB_OFFLINE=1), so models come from the cache at once and a missing one is a one-line error rather than retries
and a traceback; where it can, downloads work as usual. The same two commands then serve both worlds.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, MutableMapping
from urllib.parse import urlsplit

OFFLINE = "HF_HUB_OFFLINE"
DEFAULT_ENDPOINT = "https://huggingface.co"


def hub_reachable(endpoint: str, timeout: float = 3.0) -> bool:
    """A TCP connection to the endpoint's host and port opens within `timeout` seconds."""
    parts = urlsplit(endpoint)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "", port), timeout=timeout).close()
    except OSError:
        return False
    return True


def decide_offline(
    environ: MutableMapping[str, str] = os.environ, reachable: Callable[[str], bool] = hub_reachable
) -> bool:
    """Set HF_HUB_OFFLINE=1 in `environ` when it is unset and the hub cannot be reached; True when the run is
    offline."""
    if OFFLINE in environ:
        return environ[OFFLINE].strip().lower() in ("1", "true", "yes", "on")
    endpoint = environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT)
    if reachable(endpoint):
        return False
    environ[OFFLINE] = "1"
    print(
        f"the Hugging Face hub ({endpoint}) cannot be reached: models come from the cache (HF_HUB_OFFLINE=1)",
        file=sys.stderr,
    )
    return True
