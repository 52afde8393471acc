"""Benchmark 6: replay of the TalkingData sample through `POST /` with replay.py.

    python -m bench.talkingdata_replay [--quick]

The service runs under gunicorn.conf.py with TRUST_CLIENT_TS=1, so each click
is checked at its logged time, and `replay.py` posts the 100,000 rows of
`talkingdata_train_sample.csv` (from the shared data folder beside the
repository) at two concurrencies. The replay client is Python (requests),
so the table shows its CPU time per click beside the server's: on a small
machine the client takes a large share of the CPU.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from bench import harness

CONCURRENCY_LEVELS = (8, 32)
QUICK_LIMIT = 10_000  # rows replayed with --quick
REPLAY_TIMEOUT_SEC = 600.0


def replay(url, concurrency, limit=None):
    """Run replay.py once and return its JSON summary, the CPU seconds it used and its exit status."""
    command = [sys.executable, "replay.py", harness.TALKINGDATA_SAMPLE, "--url", url,
               "--concurrency", str(concurrency), "--json", "--no-progress"]
    if limit:
        command += ["--limit", str(limit)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        completed = subprocess.run(command, cwd=harness.ROOT, capture_output=True, text=True,
                                   timeout=REPLAY_TIMEOUT_SEC)
    except subprocess.TimeoutExpired:
        raise harness.BenchError(f"replay.py did not finish within {REPLAY_TIMEOUT_SEC:g} s") from None
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise harness.BenchError(
            f"replay.py exited with status {completed.returncode} and printed no JSON summary: "
            f"{completed.stderr.strip()[-2000:]}"
        )
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return json.loads(lines[-1]), cpu, completed.returncode


def run(quick=False):
    """Run the benchmark, print its table and return the figures."""
    if not os.path.exists(harness.TALKINGDATA_SAMPLE):
        raise harness.BenchError(f"the TalkingData sample is missing: {harness.TALKINGDATA_SAMPLE}")
    limit = QUICK_LIMIT if quick else None
    server = harness.start_redis()
    rows = []
    try:
        for concurrency in CONCURRENCY_LEVELS:
            # A fresh service and Redis state per run, so the second run's
            # clicks are not click spam because of the first run's.
            harness.redis_client(server.url).flushall()
            with harness.start_service(server.url, TRUST_CLIENT_TS=1) as service:
                meter = harness.CpuMeter(service=service.process.pid,
                                         redis=server.process.pid).start()
                started = time.monotonic()
                summary, client_cpu, status = replay(service.url, concurrency, limit)
                elapsed = time.monotonic() - started
                cpu = meter.stop()
            clicks = max(summary["sent"], 1)
            rows.append([
                concurrency, summary["sent"], summary["accepted"], summary["error_total"],
                summary["events_per_second"], summary["latency_ms"].get("p50"),
                summary["latency_ms"].get("p99"),
                1000 * client_cpu / clicks, 1000 * cpu["service"] / clicks,
                1000 * cpu["redis"] / clicks,
                f"{harness.machine_share(client_cpu + cpu['service'] + cpu['redis'], elapsed):.0%}",
                status,
            ])
    finally:
        server.stop()
    harness.print_table(
        "TalkingData sample through replay.py (TRUST_CLIENT_TS=1)",
        ["concurrency", "sent", "accepted", "errors", "events/s", "p50 ms", "p99 ms",
         "replay CPU ms/click", "gunicorn CPU ms/click", "redis CPU ms/click",
         "machine CPU share", "exit status"],
        rows,
    )
    return {"events_per_sec": {row[0]: row[4] for row in rows}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"replay the first {QUICK_LIMIT:,} rows instead of all")
    args = parser.parse_args(argv)
    harness.print_machine()
    run(quick=args.quick)


if __name__ == "__main__":
    main()
