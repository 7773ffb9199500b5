"""Keeping email-link tokens out of logs: the access logs of gunicorn and of werkzeug's dev
server, and Flask's error log, all name the request path, and /a/<token> is a credential
until used. Also covers the token inside a ?next= after a step-up sign-in."""
from __future__ import annotations

import logging
import re

from gunicorn.glogging import Logger as GunicornLogger

_LINK = re.compile(r"(/|%2F)a(/|%2F)[A-Za-z0-9_\-.]{16,}", re.IGNORECASE)


def redact_link_tokens(text: str) -> str:
    return _LINK.sub(r"\1a\2[redacted]", text)


class LinkTokenFilter(logging.Filter):
    """Rewrites a record's message with link tokens redacted (never drops the record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_link_tokens(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def install_log_redaction(app_logger: logging.Logger) -> None:
    for logger in (logging.getLogger("werkzeug"), app_logger):
        if not any(isinstance(f, LinkTokenFilter) for f in logger.filters):
            logger.addFilter(LinkTokenFilter())


class RedactingGunicornLogger(GunicornLogger):
    """gunicorn's logger with link tokens redacted from every access-log atom (request line,
    path, query, referer) and from its error log. Named by gunicorn.conf.py."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        if not any(isinstance(f, LinkTokenFilter) for f in self.error_log.filters):
            self.error_log.addFilter(LinkTokenFilter())

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        return {key: redact_link_tokens(value) if isinstance(value, str) else value
                for key, value in atoms.items()}
