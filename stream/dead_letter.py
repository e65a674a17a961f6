"""The dead-letter message: a refused record (or array element), why, and where it came from.

Whatever a producer sent, its dead letter must reach Kafka: a letter the
broker refuses would stop the batch that refused the record. So the value is
always valid JSON (UTF-8) and stays well under Kafka's default 1 MB message
limit, under 100 KB:

* the payload is kept as text when the refused bytes are valid UTF-8, and as
  base64 when they are not (``payload_encoding`` says which);
* at most :data:`MAX_PAYLOAD_BYTES` of it are kept: the first 64 KiB of the
  bytes for base64; for text, the longest prefix, cut between characters,
  whose JSON string form (escapes included) fits in 64 KiB;
* ``payload_bytes`` and ``payload_sha256`` describe the original bytes, so a
  truncated payload (``payload_truncated``) can still be matched to its record;
* the reason is capped at :data:`MAX_REASON_CHARS` characters.

The key, ``topic:partition:offset``, is unique per origin: a letter sent twice
(a batch redelivered after a crash) is recognisable as the same one.

Example:
    >>> import json
    >>> from stream.events import Rejected
    >>> letter = DeadLetter("requests", 2, 41, Rejected("missing field 'ts'", b'{"event_id": "r-1"}'))
    >>> letter.key
    b'requests:2:41'
    >>> message = json.loads(letter.value())
    >>> message["reason"], message["offset"], message["payload"], message["payload_encoding"]
    ("missing field 'ts'", 41, '{"event_id": "r-1"}', 'utf-8')
    >>> message["payload_bytes"], message["payload_truncated"], message["payload_sha256"][:12]
    (19, False, 'f4d6b0bfbd45')
    >>> utf16 = DeadLetter("requests", 0, 7, Rejected("not UTF-8: looks like UTF-16", '{}'.encode("utf-16")))
    >>> message = json.loads(utf16.value())
    >>> message["payload"], message["payload_encoding"]
    ('//57AH0A', 'base64')
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass

from stream.events import Rejected

MAX_PAYLOAD_BYTES = 64 * 1024
"""The most of a refused payload a letter carries: enough to see what went wrong, far below Kafka's 1 MB."""

MAX_REASON_CHARS = 1_000
"""The longest reason a letter carries; a longer one is cut and ends with an ellipsis."""


@dataclass(frozen=True)
class DeadLetter:
    """A refused record (or array element) and its origin, as sent to the dead-letter topic."""

    topic: str
    """The Kafka topic the record came from (a topic name: at most 249 ASCII characters)."""
    partition: int
    offset: int
    rejected: Rejected

    @property
    def key(self) -> bytes:
        """``topic:partition:offset``: unique per origin, so a letter sent twice after a crash is recognisable."""
        return f"{self.topic}:{self.partition}:{self.offset}".encode()

    def value(self) -> bytes:
        """The letter as a JSON object in UTF-8, under 100 KB whatever was refused (see the module)."""
        original = self.rejected.payload
        payload, encoding, kept = _payload_field(original)
        reason = self.rejected.reason
        if len(reason) > MAX_REASON_CHARS:
            reason = reason[: MAX_REASON_CHARS - 1] + "…"
        message = {
            "reason": reason,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "payload": payload,
            "payload_encoding": encoding,
            "payload_bytes": len(original),
            "payload_sha256": hashlib.sha256(original).hexdigest(),
            "payload_truncated": kept < len(original),
        }
        # Non-ASCII text stays as it is (a \u escape would triple it); a reason built by a caller from
        # received text may hold an unpaired surrogate, which becomes its JSON escape instead of an error.
        return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "backslashreplace")


def _payload_field(original: bytes) -> tuple[str, str, int]:
    """The payload as written in the letter, its ``payload_encoding``, and how many original bytes it holds."""
    try:
        original.decode("utf-8")
    except UnicodeDecodeError:
        kept = original[:MAX_PAYLOAD_BYTES]
        return base64.b64encode(kept).decode("ascii"), "base64", len(kept)
    cut = min(len(original), MAX_PAYLOAD_BYTES)
    while cut < len(original) and original[cut] & 0xC0 == 0x80:  # the byte after the cut continues a character
        cut -= 1
    text = _fitting_prefix(original[:cut].decode("utf-8"))
    return text, "utf-8", len(text.encode("utf-8"))


def _fitting_prefix(text: str) -> str:
    """The longest prefix of ``text`` whose JSON string form fits in :data:`MAX_PAYLOAD_BYTES`.

    Escaping grows text: a quote takes two bytes, a control character six, so
    64 KiB of text may need up to 384 KiB written out.
    """
    if _json_size(text) <= MAX_PAYLOAD_BYTES:
        return text
    fits, too_long = 0, len(text)
    while too_long - fits > 1:
        middle = (fits + too_long) // 2
        if _json_size(text[:middle]) <= MAX_PAYLOAD_BYTES:
            fits = middle
        else:
            too_long = middle
    return text[:fits]


def _json_size(text: str) -> int:
    """Bytes ``text`` takes as the inside of a JSON string in a letter (quotes not counted)."""
    return len(json.dumps(text, ensure_ascii=False).encode("utf-8")) - 2
