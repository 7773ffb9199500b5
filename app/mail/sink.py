"""The local mail sink's log, read back (development): `make run` catches every mail in a
local SMTP server that prints each message to `.run/mail.log`. The bodies there are MIME
(quoted-printable, soft line breaks), so a link copied from it is broken; this decodes them, so
`flask mail last-link` and the Sent mail page can hand a developer a link that works. The
database never keeps the link tokens; only this log of a local sink does."""
from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass
from pathlib import Path

from flask import current_app

BEGIN = "---------- MESSAGE FOLLOWS ----------"
END = "------------ END MESSAGE ------------"
URL_RE = re.compile(r"https?://[^\s\"'<>]+")
# The tail of a long-running log that is read back: enough for the newest few thousand mails.
MAX_READ = 32 * 1024 * 1024


@dataclass(frozen=True)
class SinkMail:
    message_id: str
    to: str
    subject: str
    links: tuple[str, ...]  # every link of the text body, decoded, in order

    @property
    def approval_links(self) -> tuple[str, ...]:
        return tuple(link for link in self.links if "/a/" in link)


def sink_log_path() -> Path | None:
    """Where the sink writes (MAIL_SINK_LOG; `make run` sets it), else None."""
    configured = current_app.config.get("MAIL_SINK_LOG")
    return Path(configured) if configured else None


def read_sink(path: Path) -> list[SinkMail]:
    """The mails of the log, oldest first; none when there is no log."""
    try:
        with path.open("rb") as log:
            log.seek(0, 2)
            size = log.tell()
            log.seek(max(0, size - MAX_READ))
            raw = log.read().decode("utf-8", "replace")
    except OSError:
        return []
    mails = []
    for chunk in raw.split(BEGIN)[1:]:
        body = chunk.split(END, 1)[0].lstrip("\r\n")
        if body.startswith("mail options:"):  # the sink's own line before the message
            body = body.split("\n\n", 1)[-1]
        mails.append(_parse(body))
    return mails


def _parse(text: str) -> SinkMail:
    message = email.message_from_string(text, policy=email.policy.default)
    links: list[str] = []
    part = message.get_body(preferencelist=("plain",))
    if part is not None:
        try:
            content = part.get_content()
        except (LookupError, ValueError):
            content = ""
        links = [url.rstrip(".,;)") for url in URL_RE.findall(content)]
    return SinkMail(message_id=str(message.get("Message-ID", "")).strip(),
                    to=str(message.get("To", "")), subject=str(message.get("Subject", "")),
                    links=tuple(dict.fromkeys(links)))


def last_approval_link(path: Path, to: str | None = None) -> str | None:
    """The newest approval link (`/a/…`) in the log, to `to` if given (part of the address)."""
    for mail in reversed(read_sink(path)):
        if to and to.lower() not in mail.to.lower():
            continue
        if mail.approval_links:
            return mail.approval_links[-1]
    return None


def links_by_message_id(path: Path) -> dict[str, tuple[str, ...]]:
    return {mail.message_id: mail.links for mail in read_sink(path) if mail.message_id}
