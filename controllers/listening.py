"""The operator's listening ports: a port that cannot be opened is named with its flag, not a traceback."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class PortUnavailable(Exception):  # noqa: N818 - reads as what happened
    """A port the operator listens on is taken (by a second copy of it?) or not allowed."""


@contextlib.contextmanager
def listening(flag: str, port: int) -> Iterator[None]:
    """Around the code that opens ``port``, set by the command-line option ``flag``."""
    try:
        yield
    except OSError as error:
        raise PortUnavailable(f"cannot listen on port {port} ({flag}): {error.strerror or error}; another copy "
                              f"of the operator? Pass {flag}=0 to disable it, or another port") from error
