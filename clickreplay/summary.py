"""Counts of a replay and the summary printed at its end."""

import collections
import dataclasses
import math
import threading

import constants
from clickreplay.sender import ERROR_KINDS

LATENCY_PERCENTILES = (50, 95, 99)


@dataclasses.dataclass
class Summary:
    """The outcome of a replay. `dataclasses.asdict` gives the --json output."""

    sent: int  # requests made, whatever their outcome
    accepted: int  # HTTP 200 with a known fraud_type
    fraud_types: dict  # fraud type -> accepted clicks
    errors: dict  # error kind -> failed requests
    error_total: int
    malformed_rows: int  # rows of the log that were skipped
    ts_replaced: int  # accepted clicks that the service checked at its own time
    stopped_early: bool  # the run ended before every well-formed row was sent
    elapsed_seconds: float
    events_per_second: float
    latency_ms: dict  # p50, p95, p99 and max of the request latency

    @property
    def exit_status(self):
        """0 when every well-formed row got a 200 with a known fraud type, else 1.

        A run that stopped early gets 1, because some rows were not sent.
        """
        all_accepted = self.accepted == self.sent and self.error_total == 0
        return 0 if all_accepted and not self.stopped_early else 1


class ReplayTally:
    """Running counts of a replay. The worker threads update it concurrently."""

    def __init__(self):
        self._lock = threading.Lock()
        self._outcomes = collections.Counter()
        self._latencies_sec = []
        self._ts_replaced = 0
        self._malformed_rows = 0

    def add_result(self, result):
        """Count one RequestResult and return how many of its outcome there are now."""
        with self._lock:
            self._outcomes[result.outcome] += 1
            self._latencies_sec.append(result.latency_sec)
            if result.ts_replaced:
                self._ts_replaced += 1
            return self._outcomes[result.outcome]

    def add_malformed_row(self):
        """Count one skipped row and return how many there are now."""
        with self._lock:
            self._malformed_rows += 1
            return self._malformed_rows

    def summarise(self, elapsed_seconds, stopped_early=False):
        """Return the Summary of what has been counted so far."""
        with self._lock:
            outcomes = collections.Counter(self._outcomes)
            latencies_sec = sorted(self._latencies_sec)
            ts_replaced = self._ts_replaced
            malformed_rows = self._malformed_rows

        sent = sum(outcomes.values())
        fraud_types = {name: outcomes[name] for name in constants.FRAUD_TYPES}
        errors = {kind: outcomes[kind] for kind in ERROR_KINDS}
        return Summary(
            sent=sent,
            accepted=sum(fraud_types.values()),
            fraud_types=fraud_types,
            errors=errors,
            error_total=sum(errors.values()),
            malformed_rows=malformed_rows,
            ts_replaced=ts_replaced,
            stopped_early=stopped_early,
            elapsed_seconds=round(elapsed_seconds, 3),
            events_per_second=round(sent / elapsed_seconds, 1) if elapsed_seconds > 0 else 0.0,
            latency_ms=latency_percentiles_ms(latencies_sec),
        )


def latency_percentiles_ms(sorted_latencies_sec):
    """Return the nearest-rank percentiles and the max of sorted latencies, in ms."""
    if not sorted_latencies_sec:
        return {f"p{percent}": None for percent in LATENCY_PERCENTILES} | {"max": None}

    count = len(sorted_latencies_sec)
    percentiles = {}
    for percent in LATENCY_PERCENTILES:
        rank = max(math.ceil(percent / 100 * count), 1)
        percentiles[f"p{percent}"] = round(sorted_latencies_sec[rank - 1] * 1000, 2)
    percentiles["max"] = round(sorted_latencies_sec[-1] * 1000, 2)
    return percentiles


def format_summary(summary):
    """Return the summary as lines of text for a terminal."""
    fraud_types = ", ".join(f"{name} {count}" for name, count in summary.fraud_types.items())
    errors = ", ".join(f"{kind} {count}" for kind, count in summary.errors.items())
    if summary.sent:
        latency = ", ".join(f"{name} {value}" for name, value in summary.latency_ms.items())
    else:
        latency = "no requests"

    lines = [
        f"sent {summary.sent} events in {summary.elapsed_seconds:.1f} s "
        f"({summary.events_per_second:.1f} events/s)",
        f"accepted (HTTP 200): {summary.accepted} ({fraud_types})",
        f"errors: {summary.error_total} ({errors})",
        f"malformed rows skipped: {summary.malformed_rows}",
        f"checked at the service's time instead of click_time: {summary.ts_replaced}",
        f"latency ms: {latency}",
    ]
    if summary.stopped_early:
        lines.append("stopped early: some well-formed rows were not sent")
    return "\n".join(lines)
