"""Reaching the Tinker service with the official SDK, and failing fast when it cannot be reached.

``tinker.ServiceClient`` is lazy: its first request (fetching the client config and opening a
session) is sent by the first ``create_*`` call, through ``execute_with_retries``, which
retries connection errors and 5xx answers for up to 5 minutes (a constant in the SDK) on top
of the HTTP client's own 10 retries. A wrong ``base_url`` or a dead network would show as a
silent five-minute hang. ``check_service`` therefore sends the SDK's own first requests once,
with no retries and a short timeout, before any client is created: an unreachable service or
a rejected key is reported in seconds. Once the service has answered, the SDK's retries are
what a long run wants (transient errors heal themselves), so they are left as they are.
"""

from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import dataclass
from typing import Any

from tinkerplug.errors import BackendError

KEY_HINT = "export TINKER_API_KEY=tml-...  (or `tinker auth login`; or use backend = \"local\")"


@dataclass(frozen=True)
class ServiceCheck:
    """What the service said before any session was opened."""

    base_url: str
    supported_models: list[str] | None  # None when the server did not list them


def resolve_base_url(configured: str | None) -> str:
    """``[tinker] base_url``, else ``TINKER_BASE_URL``, else the SDK's production URL."""
    from tinker.lib.base_url import resolve_base_url as sdk_resolve

    return sdk_resolve(configured or None)


def resolve_api_key() -> str:
    """``TINKER_API_KEY``, else the SDK's stored default key (``tinker auth login``).

    The key never comes from the config file and is never written anywhere.
    """
    key = os.environ.get("TINKER_API_KEY", "").strip()
    source = "TINKER_API_KEY"
    if not key:
        try:
            from tinker.lib.credentials import JsonCredentialStore, default_credentials_path

            record = JsonCredentialStore(default_credentials_path()).get_default_key()
            key, source = (record.key if record else ""), "the stored Tinker credentials"
        except Exception:  # noqa: BLE001 - an unreadable store is the same as none
            key = ""
    if not key:
        raise BackendError('backend = "tinker" needs an API key: TINKER_API_KEY is not set', hint=KEY_HINT)
    if not key.startswith(("tml-", "eyJ")):
        raise BackendError(
            f"the API key in {source} does not look like a Tinker key (it must start with 'tml-')",
            hint=KEY_HINT,
        )
    return key


def make_service_client(base_url: str, api_key: str) -> Any:
    """The SDK's ``ServiceClient``. Sends nothing: the first request goes out on first use."""
    import tinker

    return tinker.ServiceClient(base_url=base_url, api_key=api_key)


def check_service(base_url: str, api_key: str, timeout_s: float) -> ServiceCheck:
    """Send the SDK's first requests once (no retries, ``timeout_s`` each) and explain failures.

    1. ``/client/config``: is anything there, and does it speak Tinker?
    2. the key: exchanged for a session token (``/auth/token``) when the server uses tokens,
       then ``/get_server_capabilities``, which also lists the models the key may train.

    Runs on a thread of its own, so it works from inside the training loop's event loop.
    """
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = asyncio.run(_check(base_url, api_key, timeout_s))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=run, name="tinkerplug-tinker-check", daemon=True)
    thread.start()
    thread.join(timeout_s * 4 + 5)  # each of at most 3 requests is bounded by timeout_s
    if thread.is_alive():
        raise BackendError(
            f"Tinker at {base_url} did not answer within {timeout_s * 4 + 5:.0f}s",
            hint="check base_url / TINKER_BASE_URL and your network; [tinker] connect_timeout raises the limit",
        )
    if "error" in result:
        raise result["error"]
    return result["value"]


async def _check(base_url: str, api_key: str, timeout_s: float) -> ServiceCheck:
    import httpx
    import tinker
    from tinker import types
    from tinker._client import AsyncTinker  # the SDK's HTTP client: same URLs, headers, auth

    timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0))

    def client(key: str) -> Any:
        return AsyncTinker(base_url=base_url, api_key=key, max_retries=0, timeout=timeout)

    async def ask(what: str, key: str, call: Any) -> Any:
        async with client(key) as c:
            try:
                return await call(c)
            except tinker.APITimeoutError:
                raise BackendError(
                    f"Tinker at {base_url} did not answer {what} within {timeout_s:.0f}s",
                    hint="check base_url / TINKER_BASE_URL and your network; [tinker] connect_timeout raises the limit",
                ) from None
            except tinker.APIConnectionError as exc:
                cause = exc.__cause__ or exc
                raise BackendError(
                    f"cannot reach Tinker at {base_url}: {type(cause).__name__}: {cause}",
                    hint="check [tinker] base_url / TINKER_BASE_URL (unset both for the default service) and your network",
                ) from None
            except (tinker.AuthenticationError, tinker.PermissionDeniedError) as exc:
                raise BackendError(
                    f"Tinker at {base_url} rejected the API key (HTTP {exc.status_code}: {_detail(exc)})",
                    hint="check TINKER_API_KEY; keys are listed in the Tinker console",
                ) from None
            except tinker.APIStatusError as exc:
                raise BackendError(
                    f"Tinker at {base_url} answered {what} with HTTP {exc.status_code}: {_detail(exc)}",
                    hint="is base_url the Tinker API? (unset it for the default service)",
                ) from None

    config = await ask(
        "the client-config request",
        api_key,
        lambda c: c.service.client_config(request=types.ClientConfigRequest(sdk_version=tinker.__version__)),
    )
    key = api_key
    if config.pjwt_auth_enabled:
        key = (await ask("the key exchange", api_key, lambda c: c.service.auth_token())).jwt
    capabilities = await ask("the capabilities request", key, lambda c: c.service.get_server_capabilities())
    models = getattr(capabilities, "supported_models", None) or []
    names = [n for n in (_field(m, "model_name") for m in models) if n]
    return ServiceCheck(base_url=base_url, supported_models=names or None)


def check_base_model(base_model: str, check: ServiceCheck) -> None:
    """A base model the service does not serve fails now, with the list of those it does."""
    if check.supported_models is not None and base_model not in check.supported_models:
        raise BackendError(
            f"Tinker at {check.base_url} does not serve base_model {base_model!r}",
            hint="models it serves: " + ", ".join(sorted(check.supported_models)),
        )


def _field(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, dict) else getattr(item, name, None)


def _detail(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        text = str(body.get("detail") or body.get("message") or body)
    else:
        text = str(getattr(exc, "message", "") or exc)
    if "<html" in text.lower():
        return "an HTML page, not the Tinker API"
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:200] + "…"
