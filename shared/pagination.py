"""Opaque AIP-style page tokens bound to the query they continue."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from shared.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument([FieldViolation("page_size", "must not be negative")])
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(query: str, position: Any) -> str:
    raw = json.dumps({"q": query, "p": position}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, query: str) -> Any:
    """The position a token continues from; None for the first page."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(data, dict) or data.get("q") != query:
            raise ValueError("token of another query")
        return data["p"]
    except (ValueError, KeyError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidArgument(
            [
                FieldViolation(
                    "page_token", "is not a token this query returned; start over without it"
                )
            ]
        ) from exc
