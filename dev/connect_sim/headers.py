"""RFC 8941 structured-field strings and lists of them, as the keys travel.

``Idempotency-Key`` is an sf-string (IETF httpapi idempotency-key draft) and
``Signal-Idempotency-Keys`` a List of sf-strings (docs/TEAM_NOTES.md). Anything
else in those headers is malformed and answered with 400.
"""

from __future__ import annotations

import re
from typing import Final

# An sf-string: printable ASCII in double quotes, with \" and \\ the only escapes.
# Written as an unrolled loop (a run of plain characters, then escape + run ...), so
# matching is linear: no two ways to split a string, no backtracking blow-up.
_PLAIN: Final = r"[\x20\x21\x23-\x5b\x5d-\x7e]*"
_INNER: Final = rf'{_PLAIN}(?:\\["\\]{_PLAIN})*'
_STRING_RE: Final = re.compile(rf'"({_INNER})"')
# A whole List: members separated by OWS "," OWS; validated in one pass, then split.
_LIST_RE: Final = re.compile(rf'"{_INNER}"(?:[ \t]*,[ \t]*"{_INNER}")*')
_ESCAPE_RE: Final = re.compile(r"\\([\"\\])")


def _unescape(inner: str) -> str:
    return _ESCAPE_RE.sub(r"\1", inner) if "\\" in inner else inner


def parse_sf_string(text: str) -> str | None:
    """An RFC 8941 sf-string, or None when malformed."""
    match = _STRING_RE.fullmatch(text.strip(" "))
    return _unescape(match.group(1)) if match else None


def parse_sf_list(text: str) -> list[str] | None:
    """An RFC 8941 List of sf-strings, or None when malformed (an empty List is [])."""
    text = text.strip(" ")
    if not text:
        return []
    if _LIST_RE.fullmatch(text) is None:
        return None
    return [_unescape(inner) for inner in _STRING_RE.findall(text)]
