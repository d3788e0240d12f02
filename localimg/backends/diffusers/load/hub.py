"""The hub as model loading meets it: is it reachable, a repo's model_index.json, and its
failures in the words every hub caller shares (_util/hub_errors.py).

torch and diffusers are not needed here; huggingface_hub is imported inside functions.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from localimg._util.hub_errors import first_line, hub_problem
from localimg.config import ModelSource
from localimg.errors import LocalimgError, ModelUnavailable

log = logging.getLogger(__name__)

# What an offline miss can do instead, for someone loading a model (not downloading a file).
OFFLINE_HINT = (
    "Connect once so it downloads, set HF_ENDPOINT to a mirror, or use a local model: "
    "--model /path/to/folder-or-file.safetensors"
)
HUB_PROBE_TIMEOUT = 2.0  # seconds for the one connection attempt that tells whether the hub is up
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT) -> bool:
    """Whether the hub (HF_ENDPOINT) accepts a connection; False when declared offline.

    Unreachable, huggingface_hub retries every request with back-off (about 27 s and a screen of
    retry warnings, per file) before the cache lookup fails anyway; one short probe lets localimg
    load from the cache only, and say at once what is wrong when the model is not there. Behind a
    proxy the endpoint cannot be probed directly, so the library decides, as before.
    """
    import os
    import socket
    from urllib.parse import urlsplit

    from huggingface_hub import constants as hf_constants

    if hf_constants.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(name) for name in PROXY_VARIABLES):
        return True
    url = urlsplit(hf_constants.ENDPOINT)
    if not url.hostname:
        return True
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        log.info("the hub at %s cannot be reached: using the local cache only", url.netloc)
        return False


def model_index(
    source: ModelSource, revision: str | None, local_only: bool = False
) -> dict[str, Any]:
    """model_index.json of a folder or hub repo (downloading it checks the repo is reachable;
    `local_only`: from the Hugging Face cache, without asking the hub)."""
    if source.kind == "folder":
        path = source.path / "model_index.json"
        if not path.is_file():
            raise ModelUnavailable(
                f"{source.location} is not a diffusers model folder (no model_index.json)"
            )
    else:
        from huggingface_hub import hf_hub_download

        path = Path(
            hf_hub_download(
                source.location,
                "model_index.json",
                revision=revision,
                local_files_only=local_only,
            )
        )
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def hub_error(source: ModelSource, exc: Exception) -> LocalimgError:
    """Turn a hub/loading failure into an error that says what to do."""
    where = source.location
    problem = hub_problem(exc, where, offline_hint=OFFLINE_HINT)
    if problem is not None:
        return ModelUnavailable(problem)
    return ModelUnavailable(f"cannot load {where}: {first_line(exc)}")
