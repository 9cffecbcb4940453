"""A time limit on every request to the Hugging Face Hub. huggingface_hub's shared HTTP client has none
(``httpx2.Client(timeout=None)``), so a Hub that takes the connection and never answers would hang a Space's start
(``MODEL_ID``), a push, and the corrections' scheduled upload for ever.

With :func:`bound`, a request gives up after ``HF_HUB_DOWNLOAD_TIMEOUT`` seconds without a byte (huggingface_hub's own
setting, default 10 s, which its docs call "the default timeout for other requests" too) and a connection after
``HF_HUB_ETAG_TIMEOUT``; huggingface_hub's own retries stay as they are, so each call fails in bounded time with the
Hub's error, which the caller turns into a sentence.
"""

from __future__ import annotations

_installed = False


def bound() -> None:
    """Give huggingface_hub's shared client its time limits (once; a client factory set by the caller is kept)."""
    global _installed
    from huggingface_hub import constants, set_client_factory
    from huggingface_hub.utils import _http

    if _installed or _http._GLOBAL_CLIENT_FACTORY is not _http.default_client_factory:
        return

    def limit(request) -> None:
        # huggingface_hub passes timeout=None explicitly on many calls, which overrides a client default; the
        # request's own extension is what the transport reads, so a request with no limit at all gets ours here
        timeout = request.extensions.get("timeout") or {}
        if not any(timeout.values()):
            request.extensions["timeout"] = {"connect": constants.HF_HUB_ETAG_TIMEOUT,
                                             "read": constants.HF_HUB_DOWNLOAD_TIMEOUT,
                                             "write": constants.HF_HUB_DOWNLOAD_TIMEOUT,
                                             "pool": constants.HF_HUB_DOWNLOAD_TIMEOUT}

    def factory():
        client = _http.default_client_factory()
        client.event_hooks["request"].append(limit)
        return client

    set_client_factory(factory)
    _installed = True
