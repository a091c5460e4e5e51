"""ImageNet encoder weights through smp's own loader, failing fast and clearly when offline.

smp 0.6 fetches encoder weights with ``huggingface_hub.hf_hub_download`` (repos ``smp-hub/<encoder>.
<weights>`` pinned to a commit). When the files are not cached and the Hub cannot be reached, that call
retries with back-off for half a minute or more before giving up with a generic message. Clusters and
hospital networks are often offline, so before handing over to smp we check the cache ourselves and,
when the files are missing, either stop at once (offline mode) or probe the Hub endpoint with one short
connection attempt. The weights themselves are always loaded by smp's real code path.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

from organseg.errors import ModelError

T = TypeVar("T")

#: Files smp reads for every hub-hosted encoder.
WEIGHT_FILES = ("config.json", "model.safetensors")
#: Seconds for the one reachability probe of the Hub endpoint.
PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class EncoderWeights:
    """Where smp will look for one encoder's pretrained weights."""

    encoder: str
    weights: str
    repo_id: str
    revision: str

    @property
    def cache_folder(self) -> Path:
        """The repo's folder inside the Hugging Face hub cache."""
        return hub_cache_dir() / ("models--" + self.repo_id.replace("/", "--"))

    def missing_files(self) -> list[str]:
        """Files of this repo that are not in the local cache."""
        from huggingface_hub import try_to_load_from_cache

        missing = []
        for filename in WEIGHT_FILES:
            hit = try_to_load_from_cache(self.repo_id, filename, revision=self.revision)
            if not isinstance(hit, str):
                missing.append(filename)
        return missing

    def fill_instructions(self) -> str:
        """How a person fills the cache, for error messages and docs."""
        return (
            f"fill the cache on a machine with internet access: "
            f"`HF_HOME=<dir> hf download {self.repo_id} --revision {self.revision}` "
            f"(or `huggingface-cli download` with the same arguments), then copy "
            f"<dir>/hub/{self.cache_folder.name} into {hub_cache_dir()} "
            f"(or set HF_HOME/HF_HUB_CACHE to point at the filled cache)"
        )


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache in effect (``HF_HUB_CACHE``, else ``$HF_HOME/hub``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def resolve_encoder_weights(encoder: str, weights: str, member: str) -> EncoderWeights:
    """Look up smp's pinned hub repo for ``encoder``/``weights``, or raise :class:`ModelError`."""
    from segmentation_models_pytorch.encoders import encoders

    if encoder not in encoders:
        raise ModelError(f"member {member!r}: smp has no encoder {encoder!r}")
    settings = encoders[encoder]["pretrained_settings"]
    if weights not in settings:
        raise ModelError(
            f"member {member!r}: encoder {encoder!r} has no {weights!r} weights; "
            f"available: {sorted(settings)} (or None for random initialisation)"
        )
    entry = settings[weights]
    return EncoderWeights(encoder, weights, entry["repo_id"], entry["revision"])


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _probe_endpoint() -> str | None:
    """One short TCP connection to the Hub endpoint; returns why it failed, or None if reachable.

    Skipped (None) behind an HTTP(S) proxy, where only the proxy knows whether the Hub is reachable.
    """
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return None
    except OSError as exc:
        return f"the Hub endpoint {constants.ENDPOINT} is unreachable ({exc})"


def load_with_pretrained(
    member: str, encoder: str, weights: str | None, build: Callable[[str | None], T]
) -> T:
    """Run ``build(weights)`` (an smp constructor), turning any weights failure into ModelError.

    With ``weights=None`` this is just ``build(None)``. Otherwise the weights must be cached or the
    Hub must be reachable; both are checked up front so an offline machine fails in seconds.
    """
    if weights is None:
        return build(None)
    ref = resolve_encoder_weights(encoder, weights, member)
    missing = ref.missing_files()
    if missing:
        reason = "offline mode is on (HF_HUB_OFFLINE)" if _offline() else _probe_endpoint()
        if reason is not None:
            raise ModelError(
                f"member {member!r}: {weights} weights for encoder {encoder!r} are not in the "
                f"Hugging Face cache {hub_cache_dir()} (missing {missing} of {ref.repo_id}) and "
                f"{reason}; {ref.fill_instructions()}; or use encoder_weights=None"
            )
    try:
        return build(weights)
    except ModelError:
        raise
    except Exception as exc:
        if not _is_download_error(exc):
            raise
        raise ModelError(
            f"member {member!r}: could not load {weights} weights for encoder {encoder!r} from "
            f"{ref.repo_id} into the Hugging Face cache {hub_cache_dir()}: {exc}; "
            f"{ref.fill_instructions()}"
        ) from exc


def _is_download_error(exc: BaseException) -> bool:
    """Hub, network and cache errors (not programming errors) from the weights download."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    module = type(exc).__module__ or ""
    return module.startswith(("huggingface_hub", "httpx", "requests", "urllib3")) or bool(
        names & {"ConnectionError", "TimeoutError", "FileNotFoundError", "HfHubHTTPError"}
    )
