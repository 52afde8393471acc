"""Replay a TalkingData click log through the service's `POST /` endpoint.

    python replay.py FILE [--url http://127.0.0.1:5000] [--concurrency 8]
                          [--limit N] [--timeout SEC] [--max-errors N]
                          [--no-progress] [--json]

A progress bar and the reports of skipped rows and failed requests go to
stderr. The summary goes to stdout. The exit status is 0 when every
well-formed row got a 200 with a known fraud type, 1 otherwise, and 2 when an
option is invalid or the file cannot be read as a click log.
"""

import argparse
import dataclasses
import json
import logging
import sys
import threading
import time
from urllib.parse import urlsplit

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

import constants
from clickreplay.sender import send_clicks
from clickreplay.summary import ReplayTally, format_summary
from clickreplay.talkingdata import InvalidLog, count_data_lines, read_clicks

# Named, because __name__ is "__main__" when this file runs as a script.
logger = logging.getLogger("replay")

DEFAULT_URL = f"http://127.0.0.1:{constants.PORT}"
DEFAULT_CONCURRENCY = 8  # worker threads
DEFAULT_TIMEOUT_SEC = 10.0  # connect timeout and read timeout of each request
DEFAULT_MAX_ERRORS = 100  # failed requests before the replay stops, 0 for no limit

# Reports on stderr before repeats are only counted in the summary.
MAX_REPORTED_MALFORMED_ROWS = 100
MAX_REPORTED_ERRORS_PER_KIND = 5


def parse_args(argv=None):
    """Parse the command line. Invalid values exit with status 2 and a message."""
    parser = argparse.ArgumentParser(
        description="Replay a TalkingData click log (CSV) through the fraud "
        "detector's POST / endpoint and print a summary of the outcomes.",
    )
    parser.add_argument(
        "file", metavar="FILE", help="click log in the TalkingData train CSV format"
    )
    parser.add_argument(
        "--url", type=http_url, default=DEFAULT_URL, metavar="URL",
        help=f"URL that the clicks are posted to (default: {DEFAULT_URL})",
    )
    parser.add_argument(
        "--concurrency", type=positive_int, default=DEFAULT_CONCURRENCY, metavar="N",
        help=f"number of concurrent requests, one keep-alive connection each "
        f"(default: {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--limit", type=positive_int, default=None, metavar="N",
        help="maximum number of clicks to send, not counting malformed rows (default: all)",
    )
    parser.add_argument(
        "--timeout", type=positive_float, default=DEFAULT_TIMEOUT_SEC, metavar="SEC",
        help=f"connect timeout and read timeout of each request in seconds. The read "
        f"timeout limits each wait for data, not the whole response "
        f"(default: {DEFAULT_TIMEOUT_SEC:g})",
    )
    parser.add_argument(
        "--max-errors", type=non_negative_int, default=DEFAULT_MAX_ERRORS, metavar="N",
        help=f"stop after this many failed requests, 0 for no limit "
        f"(default: {DEFAULT_MAX_ERRORS})",
    )
    parser.add_argument(
        "--no-progress", action="store_true",
        help="do not show the progress bar, which is shown only when stderr is a terminal",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the summary as one JSON object"
    )
    return parser.parse_args(argv)


def http_url(text):
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"invalid URL {text!r}: expected http://HOST:PORT")
    return text


def positive_int(text):
    return _bounded_number(int, text, minimum=1, expected="an integer of at least 1")


def non_negative_int(text):
    return _bounded_number(int, text, minimum=0, expected="an integer of at least 0")


def positive_float(text):
    return _bounded_number(float, text, minimum=None, expected="a number greater than 0")


def _bounded_number(kind, text, minimum, expected):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected {expected}") from None
    too_small = value <= 0 if minimum is None else value < minimum
    if too_small or value != value:  # value != value for NaN
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected {expected}")
    return value


class ReplayMonitor:
    """Counting, progress bar and log lines of one replay.

    `on_malformed` and `on_result` are the callbacks of `read_clicks` and
    `send_clicks`. `on_result` runs in the worker threads, and it sets `stop`
    when the number of failed requests reaches `max_errors` (0 for no limit).
    """

    def __init__(self, progress, stop, max_errors):
        self.tally = ReplayTally()
        self.progress = progress
        self.stop = stop
        self.max_errors = max_errors
        self._lock = threading.Lock()  # tqdm.update is not safe across threads
        self._error_total = 0

    def on_malformed(self, row):
        count = self.tally.add_malformed_row()
        if count <= MAX_REPORTED_MALFORMED_ROWS:
            logger.warning("skipped line %d: %s", row.line_number, row.reason)
        if count == MAX_REPORTED_MALFORMED_ROWS:
            logger.warning("further malformed rows are counted in the summary only")

    def on_result(self, result):
        count = self.tally.add_result(result)
        with self._lock:
            self.progress.update(1)
            if result.accepted:
                return
            self._error_total += 1
            error_total = self._error_total

        if count <= MAX_REPORTED_ERRORS_PER_KIND:
            logger.warning(
                "line %d failed (%s): %s", result.line_number, result.outcome, result.detail
            )
        if count == MAX_REPORTED_ERRORS_PER_KIND:
            logger.warning("further %s errors are counted in the summary only", result.outcome)
        if self.max_errors and error_total == self.max_errors:
            logger.error("stopping the replay after %d failed requests (--max-errors)", error_total)
            self.stop.set()


def run_replay(
    path,
    url=DEFAULT_URL,
    concurrency=DEFAULT_CONCURRENCY,
    timeout_sec=DEFAULT_TIMEOUT_SEC,
    limit=None,
    max_errors=DEFAULT_MAX_ERRORS,
    show_progress=True,
):
    """Send the clicks of the log at `path` to `url` and return the Summary.

    Skipped rows and the first failed requests of each kind are logged. A
    KeyboardInterrupt ends the run early and still returns the Summary.

    Raises:
        InvalidLog: the file is not a TalkingData click log.
        OSError: the file cannot be read.
    """
    # Like tqdm's own default, show no bar when stderr is not a terminal.
    show_progress = show_progress and sys.stderr.isatty()
    total = None
    if show_progress:
        total = count_data_lines(path) if limit is None else min(limit, count_data_lines(path))
    progress = tqdm(total=total, unit="click", file=sys.stderr, disable=not show_progress)
    stop = threading.Event()
    monitor = ReplayMonitor(progress, stop, max_errors)

    started = time.monotonic()
    with progress, logging_redirect_tqdm():
        try:
            send_clicks(
                read_clicks(path, monitor.on_malformed, limit), url, monitor.on_result,
                concurrency=concurrency, timeout_sec=timeout_sec, stop=stop,
            )
        except KeyboardInterrupt:
            stop.set()
            logger.warning(
                "interrupted, so the replay stopped early. "
                "The summary covers the clicks sent so far"
            )
    summary = monitor.tally.summarise(time.monotonic() - started, stopped_early=stop.is_set())

    if summary.accepted and summary.ts_replaced == summary.accepted:
        logger.warning(
            "the service ignored click_time and checked every click at its own time, "
            "so set TRUST_CLIENT_TS=1 on the service to check clicks at their logged times"
        )
    return summary


def main(argv=None):
    """Run the command line and return the exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s", stream=sys.stderr)

    try:
        summary = run_replay(
            args.file, args.url, args.concurrency, args.timeout, args.limit,
            args.max_errors, show_progress=not args.no_progress,
        )
    except (InvalidLog, OSError) as error:
        logger.error("cannot replay %s: %s", args.file, error)
        return 2

    if args.json:
        print(json.dumps(dataclasses.asdict(summary)))
    else:
        print(format_summary(summary))
    return summary.exit_status


if __name__ == "__main__":
    sys.exit(main())
