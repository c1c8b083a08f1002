"""Logging setup: text or JSON lines. Rivet never logs message content, one-time codes,
passwords or tokens (A2): log calls pass ids and counts only.

``Redactor`` is the second line of defence, on the handler so it sees every record,
libraries' included: extra fields named like a secret or like content are replaced, and
anything shaped like a Rivet token in a message or a traceback is masked.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

from server.config import Config

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        data.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            data["exc"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(data, default=str)


#: Extra fields that would carry a secret or content; their values never reach a log.
SECRET_FIELDS = frozenset(
    {
        "token",
        "access_token",
        "refresh_token",
        "password",
        "secret",
        "login_code",
        "text",
        "content",
        "body",
        "note",
        "evidence",
    }
)
#: Access (``v1.``) and refresh (``r1.``) tokens, wherever they appear in a line.
_TOKEN = re.compile(r"\b[vr]1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_.-]{16,}")
#: A one-time code passed as ``code`` (error and close codes are ints and pass).
_CODE_TEXT = re.compile(r"^[0-9]{4,12}$")
REDACTED = "[redacted]"


def redact_text(text: str) -> str:
    return _TOKEN.sub(REDACTED, text)


class Redactor(logging.Filter):
    """Scrubs every record before it is formatted (A2)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = redact_text(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        for key in SECRET_FIELDS & vars(record).keys():
            setattr(record, key, REDACTED)
        code = getattr(record, "code", None)
        if isinstance(code, str) and _CODE_TEXT.match(code):
            record.code = REDACTED
        if record.exc_info:
            # Another handler may have formatted (and cached) the traceback already.
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact_text(text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        base = super().format(record)
        if extra:
            base += " " + " ".join(f"{k}={v}" for k, v in extra.items())
        return base


def setup_logging(config: Config) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if config.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(Redactor())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.log_level.upper())
