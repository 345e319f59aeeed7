"""Every error a client can see, as a class carrying its Prometheus errorType.

The HTTP layer maps these to status codes in one place
(athens/router/api.py: ERROR_STATUS); storage and query code only raise them.
"""

from __future__ import annotations


class AthensError(Exception):
    """Base class: an error with a Prometheus API errorType."""

    error_type = "internal"


class BadDataError(AthensError):
    """The request itself is wrong (bad parameter, bad expression, bad body)."""

    error_type = "bad_data"


class InvalidQueryError(BadDataError):
    """The expression a request carries is not one it can run (a parse error,
    a range query of a string): the API names the parameter it came in."""


class ExecutionError(AthensError):
    """The query is valid but cannot be evaluated (e.g. many-to-many matching)."""

    error_type = "execution"


class QueryTimeoutError(AthensError):
    error_type = "timeout"


class QueryCanceledError(AthensError):
    error_type = "canceled"


class TooManySamplesError(ExecutionError):
    """A query would load more samples than --query.max-samples allows."""

    def __init__(self) -> None:
        super().__init__(
            "query processing would load too many samples into memory in query execution"
        )


class UnavailableError(AthensError):
    """A shard (or later a replica set) cannot be reached."""

    error_type = "unavailable"


class AdminDisabledError(UnavailableError):
    """An admin endpoint while --admin-api is off. Prometheus answers this
    500 (its status mapping has no case for "unavailable"), not 503: no
    retry will help."""

    def __init__(self) -> None:
        super().__init__("admin APIs disabled")


class NotFoundError(AthensError):
    error_type = "not_found"


class RejectedSamplesError(BadDataError):
    """Some samples of a write were refused (out of order, too old, ...).

    The accepted ones are stored; the message says how many were refused and why.
    """

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = dict(counts)
        detail = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))
        super().__init__(f"samples rejected: {detail}")


class TooLargeError(AthensError):
    """A request body (compressed or decompressed) is over its configured cap."""

    error_type = "bad_data"


class OverloadedError(AthensError):
    """Workers are behind; the client should retry after a pause."""

    error_type = "unavailable"
