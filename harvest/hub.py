"""Hub reachability, checked once up front so an offline machine gets one clear line instead of retries."""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from urllib.parse import urlparse


def looks_local(name: str) -> bool:
    """True when ``name`` names something on disk (or a glob of files) rather than a hub id."""
    return (
        Path(name).expanduser().exists()
        or name.startswith((".", "/", "~"))
        or any(ch in name for ch in "*?[")
        or Path(name).suffix.lower() in {".json", ".jsonl", ".txt", ".parquet", ".gz", ".zst", ".gguf", ".safetensors"}
    )


def hub_offline_forced() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hugging Face endpoint opens within ``timeout`` seconds."""
    if hub_offline_forced():
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # behind a proxy a direct probe proves nothing; let the libraries try
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False
