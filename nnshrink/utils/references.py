"""Names of the user's own code, ``"package.module:attribute"`` (the uvicorn/gunicorn convention).

The CLI and recipes name user factories (models, data, metrics, losses) this way; Python callers
pass the objects themselves. Importing the module is what the user asked for by naming it; a
name read from a *file* is never imported without the user's opt-in (see :mod:`nnshrink.io`).
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from typing import Any

_REFERENCE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class ReferenceError_(ValueError):  # noqa: N801  (ReferenceError is a builtin)
    """A ``module:attribute`` reference does not import or names the wrong kind of object."""


def is_reference(text: Any) -> bool:
    """Whether ``text`` looks like ``"package.module:attribute"``.

    Example:
        >>> is_reference("mypkg.models:build"), is_reference("resnet20"), is_reference("a/b.pt")
        (True, False, False)
    """
    return isinstance(text, str) and bool(_REFERENCE.match(text))


def import_reference(reference: str, what: str = "object") -> Any:
    """Import ``"package.module:attribute"`` (dotted attributes allowed) and return the object.

    Args:
        reference: the reference string.
        what: what the caller expects, for error messages (``"model factory"``).

    Raises:
        ReferenceError_: one line naming the reference and the fix.

    Example:
        >>> import_reference("math:sqrt")(4.0)
        2.0
    """
    if not is_reference(reference):
        raise ReferenceError_(
            f"{reference!r} is not a {what} reference; write it as 'package.module:name' "
            "(the module must be importable, e.g. from the current directory or PYTHONPATH)"
        )
    module_name, _, attr_path = reference.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # an ImportError, or whatever the module raises while importing
        raise ReferenceError_(
            f"cannot import {module_name!r} for {what} {reference!r} ({type(exc).__name__}: "
            f"{exc}); put its directory on PYTHONPATH or pip install the package that provides it"
        ) from None
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise ReferenceError_(
                f"{module_name!r} has no attribute {attr_path!r} ({what} {reference!r}); check "
                "the name after ':'"
            )
        obj = getattr(obj, part)
    return obj


def import_callable(reference: str, what: str = "callable") -> Callable[..., Any]:
    """:func:`import_reference`, checking that the object is callable."""
    obj = import_reference(reference, what)
    if not callable(obj):
        raise ReferenceError_(f"{what} {reference!r} is a {type(obj).__name__}, not a callable")
    return obj


def call_with_supported(fn: Callable[..., Any], kwargs: dict[str, Any], optional: dict[str, Any]):
    """Call ``fn(**kwargs, **optional)``, passing each ``optional`` entry only if ``fn`` takes it.

    Example:
        >>> call_with_supported(lambda a: a, {"a": 1}, {"batch_size": 64})
        1
    """
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    extra = {k: v for k, v in optional.items() if takes_any or k in params}
    return fn(**kwargs, **extra)
