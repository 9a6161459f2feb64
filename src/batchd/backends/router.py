"""Which backend answers which model: a routing table, first match wins."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

from batchd.backends.base import Backend
from batchd.protocol import BATCH_ENDPOINTS


@dataclass(frozen=True, slots=True)
class Route:
    pattern: str
    backend: Backend
    concurrency: int
    """The ceiling on tries in flight to this backend, across all workers."""
    adaptive: bool = True
    """Seek the backend's capacity under the ceiling (off: always the ceiling)."""
    background: bool = False
    """Only use what others leave free (engine/capacity.py)."""
    slowdown: float = 1.5
    """Background mode: most per-token slowdown batchd may cause."""


class Router:
    """Routes a model name to a backend: exact names first, then glob patterns in
    configuration order, then the fallback (the embedded models), if any."""

    def __init__(self, routes: list[Route], fallback: Route | None = None) -> None:
        self._routes = routes
        self._fallback = fallback
        self._exact = {r.pattern: r for r in reversed(routes) if not _is_glob(r.pattern)}
        self._cache: dict[str, Route | None] = {}

    def resolve(self, model: str) -> Route | None:
        if model in self._cache:
            return self._cache[model]
        route = self._resolve(model)
        if len(self._cache) < 10_000:
            self._cache[model] = route
        return route

    def _resolve(self, model: str) -> Route | None:
        route = self._exact.get(model)
        if route is not None:
            return route
        for candidate in self._routes:
            if _is_glob(candidate.pattern) and fnmatch.fnmatchcase(model, candidate.pattern):
                return candidate
        if self._fallback is not None and model in self._fallback.backend.model_ids():
            return self._fallback
        return None

    def is_fallback(self, route: Route) -> bool:
        """Whether ``route`` is the fallback (the embedded models)."""
        return route is self._fallback

    def endpoints_for(self, model: str) -> tuple[str, ...]:
        """The batch endpoints ``model`` can be sent to (none when nothing routes it).

        A backend that knows its models' endpoints says so (``endpoints_for``, as the
        embedded models do); an OpenAI-compatible server is passed every endpoint and
        answers for itself.
        """
        route = self.resolve(model)
        if route is None:
            return ()
        known = getattr(route.backend, "endpoints_for", None)
        return tuple(known(model)) if known is not None else BATCH_ENDPOINTS

    def tokenizer_for(self, model: str) -> Callable[[str], list[int]] | None:
        """The model's own tokenizer where its backend has one on disk (the embedded
        models do), for counting prompt tokens; None: count some other way."""
        route = self.resolve(model)
        known = getattr(route.backend, "tokenizer_for", None) if route is not None else None
        encoder: Callable[[str], list[int]] | None = known(model) if known is not None else None
        return encoder

    def serves(self, model: str, endpoint: str) -> bool:
        return endpoint in self.endpoints_for(model)

    def backends(self) -> list[Backend]:
        seen: dict[int, Backend] = {}
        for r in [*self._routes, *([self._fallback] if self._fallback else [])]:
            seen.setdefault(id(r.backend), r.backend)
        return list(seen.values())

    def model_ids(self) -> list[tuple[str, str]]:
        """``(model id, backend name)`` for every routable concrete model."""
        out: dict[str, str] = {}
        for r in self._routes:
            if not _is_glob(r.pattern):
                out.setdefault(r.pattern, r.backend.name)
            for m in r.backend.model_ids():
                out.setdefault(m, r.backend.name)
        if self._fallback is not None:
            for m in self._fallback.backend.model_ids():
                out.setdefault(m, self._fallback.backend.name)
        return sorted(out.items())

    async def discover(self) -> list[tuple[str, str]]:
        """Like :meth:`model_ids`, plus what glob-routed servers say they serve."""
        found = dict(self.model_ids())
        for r in self._routes:
            lister = getattr(r.backend, "list_models", None)
            if _is_glob(r.pattern) and lister is not None:
                for m in await lister():
                    if fnmatch.fnmatchcase(m, r.pattern) and self.resolve(m) is r:
                        found.setdefault(m, r.backend.name)
        return sorted(found.items())

    async def aclose(self) -> None:
        for backend in self.backends():
            await backend.aclose()


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")
