"""The IMAP keywords of mail at rest, shared by the IMAP front (a client asks) and
`at_rest.convert` (the work): a client sets `$SmimeEncrypt` or `$SmimeDecrypt` on a message
to have it replaced by its other form (a Thunderbird tag named so); `$SmimeReplacement`
marks a replacement while it is being put in place. Replacements carry none of them.

May import: stdlib.
"""

from __future__ import annotations

from typing import Final, Literal

Action = Literal["encrypt", "decrypt"]

MARK: Final = "$SmimeReplacement"
REQUEST_KEYWORDS: Final[dict[Action, str]] = {
    "encrypt": "$SmimeEncrypt",
    "decrypt": "$SmimeDecrypt",
}
