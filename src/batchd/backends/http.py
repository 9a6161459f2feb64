"""An OpenAI-compatible model server reached over HTTP (vLLM, SGLang, llama.cpp,
Ollama, OpenAI itself, ...).

The request line's ``url`` only ever selects a path under the configured base URL;
the host always comes from configuration.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from urllib.parse import urlsplit

import aiohttp

from batchd.backends.base import BackendResponse, BackendUnavailable
from batchd.backends.load import metrics_url_for, parse_load
from batchd.backends.pool import ConnectionPool
from batchd.ids import next_request_token
from batchd.settings import BackendConfig


class HttpBackend:
    def __init__(self, config: BackendConfig) -> None:
        self.name = config.name
        self.config = config
        self._base = config.base_url.rstrip("/")
        self._headers = {"Content-Type": "application/json"}
        key = config.resolved_api_key()
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self._session: aiohttp.ClientSession | None = None
        # Requests go over the lean pool (backends/pool.py: a quarter of aiohttp's CPU
        # per request); the model list and load gauges over aiohttp.
        self._pool = ConnectionPool(
            config.base_url,
            headers={"User-Agent": "batchd", **self._headers},
            timeout=config.timeout,
        )
        self._paths: dict[str, str] = {}
        self.metrics_url = metrics_url_for(config.base_url, config.metrics_url)
        # The priority field is spliced in front of the user's own fields, so a
        # `priority` the user wrote in the line still wins (JSON: last key wins).
        self._priority = (
            f'{{"priority":{config.request_priority},'.encode()
            if config.request_priority is not None
            else None
        )

    def model_ids(self) -> list[str]:
        return [m for m in self.config.models if not any(c in m for c in "*?[")]

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.config.concurrency * 2),
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
                headers=self._headers,
                # The upstream's cookies are never relevant to a batch.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    def url_for(self, endpoint: str) -> str:
        # The base URL ends in /v1 by convention; endpoints start with /v1.
        path = endpoint.removeprefix("/v1") if self._base.endswith("/v1") else endpoint
        return self._base + path

    async def send(self, endpoint: str, body: bytes) -> BackendResponse:
        path = self._paths.get(endpoint)
        if path is None:
            parts = urlsplit(self.url_for(endpoint))
            path = self._paths[endpoint] = parts.path + (f"?{parts.query}" if parts.query else "")
        if self._priority is not None:
            body = with_priority(body, self._priority)
        try:
            answer = await self._pool.post(path, body)
        except TimeoutError as exc:
            raise BackendUnavailable(
                f"{self.name}: no answer within {self.config.timeout:g}s", kind="timeout"
            ) from exc
        except OSError as exc:  # refused, reset, closed mid-answer (ConnectionClosed)
            raise BackendUnavailable(f"{self.name}: {type(exc).__name__}: {exc}") from exc
        headers = answer.headers
        return BackendResponse(
            status_code=answer.status,
            body=answer.body,
            request_id=headers.get("x-request-id") or f"req_{next_request_token()}",
            # Only a refusal carries a wait worth reading.
            retry_after=None
            if answer.status < 400
            else parse_retry_after(headers.get("retry-after-ms"), headers.get("retry-after")),
        )

    async def list_models(self) -> list[str]:
        """Ask the server which models it serves (``GET /models``); [] if it cannot say."""
        try:
            async with self._client().get(
                self._base + "/models", timeout=aiohttp.ClientTimeout(total=5)
            ) as resp:
                if resp.status != 200:
                    return []
                data = await resp.json(content_type=None)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            return []
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            return []
        return [m["id"] for m in items if isinstance(m, dict) and isinstance(m.get("id"), str)]

    async def server_load(self) -> tuple[int, int] | None:
        """``(running, waiting)`` from the server's load gauges; None if it has none."""
        if self.metrics_url is None:
            return None
        try:
            async with self._client().get(
                self.metrics_url, timeout=aiohttp.ClientTimeout(total=2)
            ) as resp:
                if resp.status != 200:
                    return None
                text = await resp.text(errors="replace")
        except (aiohttp.ClientError, OSError, TimeoutError):
            return None
        return parse_load(text)

    async def aclose(self) -> None:
        self._pool.close()
        if self._session is not None:
            await self._session.close()
            # Let aiohttp close the transports before the loop goes away.
            await asyncio.sleep(0)


def with_priority(body: bytes, prefix: bytes) -> bytes:
    """``body`` (a JSON object) with ``"priority": N`` as its first field."""
    inner = body.lstrip()[1:].lstrip()
    return prefix[:-1] + b"}" if inner.startswith(b"}") else prefix + inner


def parse_retry_after(ms: str | None, value: str | None) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
