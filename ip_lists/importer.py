"""Import of blocklist files into a list.

Accepted formats are FireHOL netsets and plain lists of one entry per line:
text after '#' or ';' is a comment, blank lines are skipped, and every other
line contains one address or CIDR range. A bad line is counted and reported by
its line number. It never stops the import.
"""

import dataclasses
import time

from ip_lists.entries import MAX_SHOWN_LENGTH, parse_entry
from ip_lists.range_index import rebuild_segments
from ip_lists.records import NEVER
from validation import InvalidField

import constants

MAX_REPORTED_ERRORS = 100  # bad lines listed in a summary, which counts the others
COMMENT_MARKERS = ("#", ";")


@dataclasses.dataclass
class ImportSummary:
    lines: int = 0
    added: int = 0
    already_present: int = 0
    invalid: int = 0
    filter_full: int = 0  # added to the blacklist, but not to the full Cuckoo filter
    errors: list = dataclasses.field(default_factory=list)  # dicts: line, text, message
    seconds: float = 0.0

    def as_dict(self):
        return {
            "lines": self.lines,
            "added": self.added,
            "already_present": self.already_present,
            "invalid": self.invalid,
            "filter_full": self.filter_full,
            "errors": self.errors,
            "errors_not_listed": self.invalid - len(self.errors),
            "seconds": round(self.seconds, 3),
        }


def entry_text(line):
    """Return the entry on a line with comments and blanks removed, or '' for none."""
    for marker in COMMENT_MARKERS:
        line = line.split(marker, 1)[0]
    return line.strip()


def _count(summary, statuses):
    for status in statuses:
        if status == "added":
            summary.added += 1
        elif status == "updated":
            summary.already_present += 1
        else:
            summary.added += 1
            summary.filter_full += 1


def import_blocklist(ip_list, lines, expires_at=NEVER, reason="", progress=None):
    """Add every valid entry of `lines` to `ip_list` and return an `ImportSummary`.

    Entries go to Redis in chunks of `constants.LIST_CHUNK_SIZE`, and the
    segments index is rebuilt once at the end, so a range of the file takes
    effect in the click check when the import ends.

    Args:
        ip_list: the `ip_lists.store.IpList` to fill.
        lines: the lines of the file, as strings.
        expires_at: expiry of the entries in ms since the epoch, or NEVER.
        reason: text stored with each new entry.
        progress: called with the number of lines handled since its last call.
    """
    started = time.monotonic()
    summary = ImportSummary()
    batch = []
    handled = 0
    any_range = False

    def flush():
        nonlocal batch, handled
        if batch:
            _count(summary, ip_list.add(batch, expires_at, reason, rebuild=False))
        if progress is not None:
            progress(handled)
        batch, handled = [], 0

    for line_number, line in enumerate(lines, start=1):
        summary.lines += 1
        handled += 1
        text = entry_text(line)
        if text:
            try:
                entry = parse_entry(text, field=f"line {line_number}")
            except InvalidField as error:
                summary.invalid += 1
                if len(summary.errors) < MAX_REPORTED_ERRORS:
                    summary.errors.append({"line": line_number, "text": text[:MAX_SHOWN_LENGTH],
                                           "message": error.message})
            else:
                batch.append(entry)
                any_range = any_range or entry.is_range
        if len(batch) >= constants.LIST_CHUNK_SIZE:
            flush()
    flush()

    if any_range:
        rebuild_segments(ip_list.client, ip_list.name)
    summary.seconds = time.monotonic() - started
    return summary
