"""Logging set-up: plain text lines or JSON lines, configured once per process."""

import json
import logging
import sys
import time

_configured = False


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object per line."""

    def format(self, record):
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def configure_logging(settings):
    """Send log records to stderr in the format of `settings.log_format`."""
    global _configured
    if _configured:
        return
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s")
        )
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    _configured = True
