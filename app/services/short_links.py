"""Short tracked links for text messages (SMS and WhatsApp): each http(s) URL in a body becomes
`{PUBLIC_BASE_URL}/l/<code>`, a 302 to the stored URL (UTM tags included) that counts the
delivery's first click, as an email's tracked link does.

Why codes rather than rows: a short link must name a delivery and a link, and the delivery part is
per message. Rows for it would cost a write per message (adapters prepare one message at a time and
must not touch the send engine's transaction), or a change to the engine's order of work to write
a claim's codes in one statement. Instead the code is derived: prefixes of the delivery's and the
link's ids, and an HMAC over both (app.security.short_codes). Following one reads the candidates
by primary key and keeps the one whose MAC matches; a forged or altered code matches none (404).
The only rows written are the channel's `message_links`, once per distinct URL per run, as for
email.

Length: the link is PUBLIC_BASE_URL + `/l/` + 20 characters, all in the GSM-7 alphabet, so it never
forces UCS-2; with a base URL such as `https://go.shop.com` (19 characters) that is 42 characters,
shorter than a typical product URL once UTM tags are on it (80-150 characters). A URL that is
already shorter than its short link is still shortened: every link counts clicks the same way.
"""
from __future__ import annotations

import re

from app.channels.base import OutgoingMessage
from app.config import Settings
from app.security.short_codes import ShortCodes
from app.services.tracking import LinkRegistry, is_trackable

SHORT_PATH = "/l/"
_URL = re.compile(r"https?://[^\s<>\"]+", re.IGNORECASE)
# Punctuation that ends a sentence rather than the URL: "Shop now: https://shop.com/sale."
_TRAILING = ".,;:!?'\""


def split_trailing(candidate: str) -> tuple[str, str]:
    """The URL a match in running text stands for, and the punctuation after it (kept as text). A
    closing parenthesis belongs to the URL only when the URL opened one."""
    end = len(candidate)
    while end:
        last = candidate[end - 1]
        if last in _TRAILING or (last == ")" and candidate.count("(", 0, end) < candidate.count(")", 0, end)):
            end -= 1
        else:
            break
    return candidate[:end], candidate[end:]


class ShortLinks:
    """Rewrites the URLs of a text message to short links, for one sender run of one channel type."""

    def __init__(self, channel_type: str, settings: Settings) -> None:
        self._base_url = settings.public_base_url.rstrip("/")
        self._codes = ShortCodes(settings.secret_key)
        self._links = LinkRegistry(channel_type)

    def shorten(self, message: OutgoingMessage, text: str) -> str:
        """`text` with each trackable URL replaced by its short link (raises SQLAlchemyError when the
        links cannot be stored: nothing may go out pointing at a link that does not exist)."""
        found = [split_trailing(match.group(0))[0] for match in _URL.finditer(text)]
        urls = [url for url in found if is_trackable(url, self._base_url)]
        if not urls:
            return text
        link_ids = self._links.ids_for(message.campaign_id, message.channel_id, urls)

        def replace(match: re.Match[str]) -> str:
            url, tail = split_trailing(match.group(0))
            if url not in link_ids:
                return match.group(0)
            return f"{self._base_url}{SHORT_PATH}{self._codes.code(message.delivery_id, link_ids[url])}{tail}"

        return _URL.sub(replace, text)
