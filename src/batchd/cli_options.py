"""Option sets that several ``batchd`` commands share, declared once.

Typer reads a command's options from its signature, so a set shared by two
commands would otherwise be written out in both. :func:`with_options` adds a set to
a command's signature; the command receives the values together, as one dict,
ready to pass on to :func:`batchd.settings.load_settings`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def with_options(options: Mapping[str, Any], *, into: str = "shared") -> Callable[[F], F]:
    """Give a command the options ``options`` (name -> ``Annotated`` type, default None);
    their values reach it as the keyword argument ``into`` (a dict)."""

    def decorate(command: F) -> F:
        own = inspect.signature(command, eval_str=True)
        hints = {n: p.annotation for n, p in own.parameters.items() if n != into}
        added = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=kind)
            for name, kind in options.items()
        ]
        kept = [p for name, p in own.parameters.items() if name != into]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            shared = {name: kwargs.pop(name) for name in options}
            return command(**kwargs, **{into: shared})

        wrapper.__signature__ = own.replace(parameters=[*kept, *added])  # type: ignore[attr-defined]
        wrapper.__annotations__ = {**hints, **options, "return": own.return_annotation}
        return wrapper  # type: ignore[return-value]

    return decorate
