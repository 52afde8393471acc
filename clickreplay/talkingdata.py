"""Reading of a TalkingData AdTracking click log as clicks for the service.

The log is a CSV file whose header names the columns
`ip,app,device,os,channel,click_time,attributed_time,is_attributed`. The
publisher encoded `ip`, `app`, `device`, `os` and `channel` as integers, so
`ip` is not a dotted address. `click_time` is UTC in the form
`YYYY-MM-DD HH:MM:SS`.
"""

import calendar
import csv
import dataclasses
import datetime
import ipaddress
import re
from pathlib import Path

COLUMNS = (
    "ip", "app", "device", "os", "channel", "click_time", "attributed_time", "is_attributed",
)

# Columns that a row needs to become a click. `attributed_time` is not sent.
REQUIRED_COLUMNS = ("ip", "app", "device", "os", "channel", "click_time", "is_attributed")

# Integer columns that the click carries to the service as extra fields.
EXTRA_FIELDS = ("app", "channel", "os", "device", "is_attributed")

INTEGER_PATTERN = re.compile(r"[0-9]+")
CLICK_TIME_PATTERN = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2})"
)


class InvalidLog(ValueError):
    """The file is not a TalkingData click log, so none of its rows can be read."""


class InvalidRow(ValueError):
    """A row cannot become a click. The message names the column and the value."""


@dataclasses.dataclass(frozen=True)
class MalformedRow:
    """A row of the log that was skipped, and why."""

    line_number: int
    reason: str


@dataclasses.dataclass(frozen=True)
class LogClick:
    """A click read from the log, with the line of the file it came from."""

    line_number: int
    payload: dict  # the JSON body for POST /


def parse_integer(column, text):
    """Return the non-negative integer in `text`, or raise InvalidRow naming `column`."""
    text = text.strip()
    if not INTEGER_PATTERN.fullmatch(text):
        raise InvalidRow(f"column '{column}' is not a non-negative integer: {text[:32]!r}")
    return int(text)


def parse_ip(text):
    """Return the integer code of column `ip` as an IPv4 address."""
    code = parse_integer("ip", text)
    try:
        return ipaddress.IPv4Address(code)
    except ipaddress.AddressValueError:
        raise InvalidRow(f"column 'ip' is {code}, beyond the IPv4 range 0 to 4294967295") from None


def parse_click_time(text):
    """Return a UTC `YYYY-MM-DD HH:MM:SS` time as milliseconds since the epoch."""
    text = text.strip()
    match = CLICK_TIME_PATTERN.fullmatch(text)
    if match is None:
        raise InvalidRow(
            f"column 'click_time' is not a UTC time of the form YYYY-MM-DD HH:MM:SS: {text[:32]!r}"
        )

    try:
        moment = datetime.datetime(*(int(part) for part in match.groups()))
    except ValueError:
        raise InvalidRow(f"column 'click_time' is not a valid date and time: {text!r}") from None
    return calendar.timegm(moment.timetuple()) * 1000


def row_to_click(row, transaction_id):
    """Map one row of the log, as column name -> text, to the JSON body of a click.

    The device id is the fingerprint `{ip}-{device}-{os}` of the raw integer
    codes, and `ts` is the click time in ms. The service uses that `ts` only
    when it runs with TRUST_CLIENT_TS=1, and otherwise stamps its own time.

    Raises:
        InvalidRow: a required column is missing or its value is invalid.
    """
    missing = [column for column in REQUIRED_COLUMNS if column not in row]
    if missing:
        raise InvalidRow(f"the row has no column {', '.join(missing)}")

    ip = parse_ip(row["ip"])
    codes = {column: parse_integer(column, row[column]) for column in EXTRA_FIELDS}
    if codes["is_attributed"] not in (0, 1):
        raise InvalidRow(f"column 'is_attributed' must be 0 or 1, got {codes['is_attributed']}")
    ts = parse_click_time(row["click_time"])

    click = {
        "device_id": f"{int(ip)}-{codes['device']}-{codes['os']}",
        "ip": str(ip),
        "transaction_id": transaction_id,
        "ts": ts,
    }
    click.update(codes)
    return click


def read_header(reader, path):
    """Return the column names of the log, or raise InvalidLog."""
    header = next(reader, None)
    if header is None:
        raise InvalidLog(f"{path} is empty: expected the header {','.join(COLUMNS)}")

    header = [name.strip() for name in header]
    missing = [column for column in REQUIRED_COLUMNS if column not in header]
    if missing:
        raise InvalidLog(
            f"{path} is not a TalkingData click log: its header has no column "
            f"{', '.join(missing)} (expected {','.join(COLUMNS)})"
        )
    return header


def read_clicks(path, on_malformed, limit=None):
    """Yield the clicks of the log at `path` in file order.

    Each rejected row goes to `on_malformed` as a MalformedRow, and reading goes
    on with the next row. Blank lines are skipped without a report. The
    transaction id of a click is `{file stem}-{line number}`, so it is the same
    in every replay of the file and points to the line it came from.

    Args:
        path: the CSV file.
        on_malformed: called with a MalformedRow for each rejected row.
        limit: maximum number of clicks to yield. Malformed rows do not count.

    Raises:
        InvalidLog: the file is empty or its header lacks a required column.
        OSError: the file cannot be opened or read.
    """
    path = Path(path)
    if limit is not None and limit <= 0:
        return

    # utf-8-sig drops a byte order mark, which would otherwise stick to the
    # first column name. A byte that is not UTF-8 becomes U+FFFD, and the row
    # is rejected if that lands in a column that is parsed.
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as file:
        reader = csv.reader(file)
        header = read_header(reader, path)

        count = 0
        for fields in reader:
            # After a row, line_num is the last line that the row spans.
            line_number = reader.line_num
            if not fields:
                continue
            if len(fields) != len(header):
                on_malformed(MalformedRow(
                    line_number, f"expected {len(header)} columns, got {len(fields)}"
                ))
                continue

            try:
                click = row_to_click(dict(zip(header, fields)), f"{path.stem}-{line_number}")
            except InvalidRow as error:
                on_malformed(MalformedRow(line_number, str(error)))
                continue

            yield LogClick(line_number, click)
            count += 1
            if limit is not None and count >= limit:
                return


def count_data_lines(path):
    """Return the number of lines after the header, to size a progress bar.

    It counts line breaks, so a quoted field with a line break inside counts
    twice. That is harmless for a progress bar.
    """
    lines = 0
    last_byte = b"\n"
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            lines += chunk.count(b"\n")
            last_byte = chunk[-1:]
    if last_byte != b"\n":
        lines += 1  # a last line without a line break
    return max(lines - 1, 0)
