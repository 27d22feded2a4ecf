"""Files: what the usual tools print about them."""
from __future__ import annotations

import re


def parse_sha256sum(text: str | None) -> str | None:
    """Pure: the digest of the first line of ``sha256sum FILE`` output (None when there is none)."""
    m = re.match(r"^([0-9a-f]{64})\s", text or "")
    return m.group(1) if m else None
