"""Stable identities for findings: message/code normalisation, fingerprints and pattern keys.

Shared by the feedback service (which stores fingerprints) and the learning service (which
ranks, deduplicates and mines patterns), so both derive exactly the same keys. Line numbers are
deliberately never part of an identity: the same finding on the next push of a pull request
usually sits on shifted lines and must keep its fingerprint.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from functools import lru_cache

FINGERPRINT_HEX_CHARS = 32
PATTERN_KEY_HEX_CHARS = 16

# One scan masks all three kinds of volatile text; at a given position a literal wins over a hash,
# and a hash over a number. Every alternative consumes its first character before any
# lookbehind, which lets the regex engine skip ahead by character set (about twice as fast).
#
# A single quote only opens/closes a literal when it is not glued to a word, so apostrophes
# ("don't", "users'") stay text. '<' and '>' count as glue too, so that a quote next to a
# replacement token ("<hex>'") stays unmatched on a re-run just as it was next to the hash.
# A hash is a whole word of 7+ hex characters (the shortest abbreviated git hash) that mixes
# digits and letters, so English words made of a-f ("facade") and plain numbers are left alone.
# A number must not continue a word, so identifiers such as "int64" survive while "42ms" becomes
# "<num>ms".
_VOLATILE = re.compile(
    r"""
    (?P<str>
        "(?:[^"\\]|\\.)*"
        | `[^`]*`
        | '(?<![\w<>]')(?:[^'\\]|\\.)*'(?![\w<>])
    )
    | (?P<hex>
        [0-9a-f](?<!\w[0-9a-f])
        (?:
            [0-9a-f]{7}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b
            | (?<=0)x[0-9a-f]+\b
            | (?=[0-9a-f]{6,}\b)(?:(?<=[0-9])[0-9]*[a-f]|(?<=[a-f])[a-f]*[0-9])[0-9a-f]*\b
        )
    )
    | (?P<num> [0-9](?<!\w[0-9])[0-9]*(?:\.[0-9]+)* )
    """,
    re.VERBOSE | re.DOTALL,
)
_TOKEN_OF_GROUP = {"str": "<str>", "hex": "<hex>", "num": "<num>"}

_MAX_PASSES = 8


def _mask(match: re.Match[str]) -> str:
    return _TOKEN_OF_GROUP[match.lastgroup or "str"]


def _normalize_once(text: str) -> str:
    # Whitespace first, so a literal spanning a line break is seen as one run of text.
    collapsed = " ".join(text.lower().split())
    return " ".join(_VOLATILE.sub(_mask, collapsed).split())


@lru_cache(maxsize=65_536)
def normalize_message(text: str) -> str:
    """Lower-case a message and mask its volatile parts: literals, hashes and numbers.

    Quoted strings become ``<str>``, hex literals, UUIDs and hashes ``<hex>``, numbers
    ``<num>``; whitespace runs collapse to one space. The result is a fixpoint
    (``normalize_message(normalize_message(x)) == normalize_message(x)``): masking can expose a
    new match (``1.5abcdef12`` -> ``<num>abcdef12``, now a hash on its own), so passes repeat
    until nothing changes, almost always after one. Replacement tokens never match again, so
    this converges; the pass cap is only a backstop. Results are cached because bots repeat the
    same messages all the time.
    """
    current = _normalize_once(text)
    for _ in range(_MAX_PASSES):
        if current.lower() == current and _VOLATILE.search(current) is None:
            return current
        current = _normalize_once(current)
    return current


def normalize_code(text: str) -> str:
    """Collapse every whitespace run of a code snippet to one space, so re-indenting is a no-op."""
    return " ".join(text.split())


def _digest(*fields: str) -> str:
    # Length-prefixing every field makes the encoding injective: no choice of field contents
    # can make two different tuples hash the same bytes (a plain separator could be forged).
    digest = hashlib.sha256()
    for field in fields:
        encoded = field.encode("utf-8", errors="surrogatepass")
        digest.update(f"{len(encoded)}:".encode("ascii"))
        digest.update(encoded)
    return digest.hexdigest()


def finding_fingerprint(*, rule_id: str, file_path: str, message: str, code_context: str) -> str:
    """A finding's identity: 32 hex chars of sha256 over rule, path, message and code context.

    The message and code are normalised and lines are left out, so the same finding on a later
    push (shifted lines, a different literal in the message, re-indented code) keeps its
    fingerprint. Cached: bots send the same findings again on every push, and ranking inline
    findings computes thousands of fingerprints per request.
    """
    return _fingerprint(rule_id, file_path, message, code_context)


def finding_fingerprints(
    rule_ids: Iterable[str],
    file_paths: Iterable[str],
    messages: Iterable[str],
    code_contexts: Iterable[str],
) -> list[str]:
    """:func:`finding_fingerprint` of each finding given as columns (one cached call each,
    without building keyword arguments per finding)."""
    return list(map(_fingerprint, rule_ids, file_paths, messages, code_contexts))


@lru_cache(maxsize=65_536)
def _fingerprint(rule_id: str, file_path: str, message: str, code_context: str) -> str:
    return _digest(
        "fp1", rule_id, file_path, normalize_message(message), normalize_code(code_context)
    )[:FINGERPRINT_HEX_CHARS]


def pattern_key(*, rule_id: str, message: str) -> str:
    """A recurring pattern's identity: 16 hex chars over the rule and its normalised message."""
    return _digest("pk1", rule_id, normalize_message(message))[:PATTERN_KEY_HEX_CHARS]
