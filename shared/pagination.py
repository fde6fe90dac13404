"""AIP-158 page tokens: opaque, signed, bound to the query they continue, checked for shape.

A token is the query and the position of the last item served, serialized and signed with HMAC
(itsdangerous) under the service's page-token key. A token that was not issued by a replica with
the same key, continues another query, or whose position does not have the shape the caller
declares (types and bounds, so that it can go straight into SQL) is INVALID_ARGUMENT with reason
``INVALID_PAGE_TOKEN`` — never INTERNAL.

The key is ``REVIEWLEARN_PAGE_TOKEN_KEY``; unset, it is derived from ``REVIEWLEARN_TOKENS``, so
that every replica given the same secret agrees (see ``ServiceSettings.page_tokens``).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, TypeVar, overload

from itsdangerous import BadData, URLSafeSerializer

from shared.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

INT64_MAX = 2**63 - 1
MAX_TEXT_CHARS = 4096  # longer than any key a position holds (a pattern key, a metric key)

T = TypeVar("T", int, str)
U = TypeVar("U", int, str)


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument([FieldViolation("page_size", "must not be negative")])
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def invalid_page_token(problem: str) -> InvalidArgument:
    return InvalidArgument(
        [FieldViolation("page_token", f"{problem}; start over without it")],
        reason="INVALID_PAGE_TOKEN",
    )


class PageTokens:
    """Issues and checks the page tokens of one service."""

    def __init__(self, key: str | bytes) -> None:
        if not key:
            raise ValueError("a page-token key must not be empty")
        self._serializer = URLSafeSerializer(
            key, salt="reviewlearn.page-token.v1", signer_kwargs={"digest_method": hashlib.sha256}
        )

    def encode(self, query: str, position: int | str | tuple[int | str, ...]) -> str:
        value = list(position) if isinstance(position, tuple) else position
        return str(self._serializer.dumps({"q": query, "p": value}))

    @overload
    def decode(self, token: str, query: str, shape: type[T]) -> T | None: ...

    @overload
    def decode(
        self, token: str, query: str, shape: tuple[type[T], type[U]]
    ) -> tuple[T, U] | None: ...

    def decode(self, token: str, query: str, shape: Any) -> Any:
        """The position a token continues from, of the declared shape; None for the first page.

        ``shape`` is ``int``, ``str`` or a tuple of them (a composite keyset position).
        """
        if not token:
            return None
        if len(token) > 2 * MAX_TEXT_CHARS:
            raise invalid_page_token("is not a token this service issued")
        try:
            data = self._serializer.loads(token)
        except BadData:
            raise invalid_page_token("is not a token this service issued") from None
        if not isinstance(data, dict) or set(data) != {"q", "p"} or data["q"] != query:
            raise invalid_page_token("belongs to another query")
        position = data["p"]
        if isinstance(shape, tuple):
            if not isinstance(position, list) or len(position) != len(shape):
                raise invalid_page_token("is malformed")
            return tuple(_checked(value, kind) for value, kind in zip(position, shape, strict=True))
        return _checked(position, shape)


def _checked(value: Any, kind: type[Any]) -> Any:
    if kind is int:
        # bool is an int to Python, not to a keyset; floats (1e400 is inf) are never positions.
        if isinstance(value, bool) or not isinstance(value, int) or abs(value) > INT64_MAX:
            raise invalid_page_token("is malformed")
        return value
    if kind is str:
        if not isinstance(value, str) or len(value) > MAX_TEXT_CHARS or "\x00" in value:
            raise invalid_page_token("is malformed")
        return value
    raise TypeError(f"unsupported page position type {kind!r}")  # a bug in the caller


def derived_key(secret: str) -> bytes:
    """A page-token key derived from another shared secret (the bearer tokens' spec)."""
    return hmac.new(b"reviewlearn page-token key", secret.encode(), hashlib.sha256).digest()
