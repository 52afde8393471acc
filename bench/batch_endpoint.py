"""Benchmark 3: `POST /batch` events per second, end to end.

    python -m bench.batch_endpoint [--quick]

The service runs under gunicorn.conf.py against its own Redis Stack server,
and wrk (`apt-get install -y wrk`) posts batches of new clicks. Events per
second are batches per second times the batch size. The main table runs the
service with no stream consumer. The variants add the built-in worker
(`consumer.py`) or the RedisGears 2 library, which runs inside redis-server.

The CPU columns give what gunicorn and redis-server spent per 1,000 events.
"EVALSHA wall share" is the part of the run that Redis spent inside the
check script, as INFO commandstats measures it in wall time. The estimate
column divides the CPU count by the measured CPU cost per event, so it is
the rate that a machine with no other load could reach.
"""

import argparse
import importlib.util
import time

from bench import harness

BATCH_SIZES = (100, 1000)  # clicks per POST /batch
CONNECTIONS = (2, 8)  # open connections of wrk
VARIANT_CONNECTIONS = 8
TARGET_BATCH_SIZE = 1000
TARGET_EVENTS_PER_SEC = 25_000
WARM_UP_SEC = 2
WRK_SCRIPT = "wrk_batches.lua"


def script_usec(client):
    """Return the microseconds that Redis has spent in EVALSHA since it started."""
    return client.info("commandstats").get("cmdstat_evalsha", {}).get("usec", 0)


def measure(service, server, batch_size, connections, seconds, consumer=None):
    """Post batches for `seconds`; return the rates, latencies and CPU costs."""
    client = harness.redis_client(server.url)
    pids = {"service": service.process.pid, "redis": server.process.pid,
            "consumer": consumer.process.pid if consumer else None}
    meter = harness.CpuMeter(**{name: pid for name, pid in pids.items() if pid}).start()
    usec_before = script_usec(client)
    started = time.monotonic()
    prefix = f"b{batch_size}-c{connections}-{time.time_ns()}"
    figures = harness.run_wrk(service.url, connections, seconds, WRK_SCRIPT, (prefix, batch_size))
    elapsed = time.monotonic() - started
    cpu = meter.stop()
    script_share = (script_usec(client) - usec_before) / 1e6 / elapsed
    client.close()

    events = max(figures["requests"] * batch_size, 1)
    service_cpu_ms = 1e6 * cpu["service"] / events
    redis_cpu_ms = 1e6 * cpu["redis"] / events
    consumer_cpu_ms = 1e6 * cpu.get("consumer", 0.0) / events
    return {
        "events_per_sec": figures["rps"] * batch_size,
        "p50_ms": figures["p50_ms"],
        "p99_ms": figures["p99_ms"],
        "errors": figures["errors"],
        "status_errors": figures["status_errors"],
        "service_cpu_ms": service_cpu_ms,
        "redis_cpu_ms": redis_cpu_ms,
        "consumer_cpu_ms": consumer_cpu_ms,
        "script_share": script_share,
        "cpu_share": harness.machine_share(sum(cpu.values()) + figures["client_cpu_sec"], elapsed),
        "estimate": harness.cpu_bound_rate(
            service_cpu_ms + redis_cpu_ms + consumer_cpu_ms, redis_cpu_ms
        ),
    }


def measure_service(gears, with_worker, points, seconds, rounds):
    """Start Redis and the service, load every (batch size, connections) point in each round."""
    server = harness.start_redis(gears=gears)
    results = {}
    try:
        settings = {"STREAM_CONSUMER": "auto" if gears else "worker"}
        with harness.start_service(server.url, **settings) as service:
            harness.run_wrk(service.url, 4, WARM_UP_SEC, WRK_SCRIPT, (f"warm-{time.time_ns()}", 100))
            consumer = harness.start_consumer(server.url) if with_worker else None
            try:
                for _ in range(rounds):
                    for batch_size, connections in points:
                        figures = measure(service, server, batch_size, connections, seconds,
                                          consumer)
                        results.setdefault((batch_size, connections), []).append(figures)
            finally:
                if consumer:
                    consumer.stop()
    finally:
        server.stop()
    return results


def run(quick=False):
    """Run the benchmark, print its tables and return the figures."""
    seconds = 3 if quick else 10
    rounds = 1 if quick else 3
    harness.require_wrk()
    points = [(size, connections) for size in BATCH_SIZES for connections in CONNECTIONS]
    results = measure_service(False, False, points, seconds, rounds)

    variant_point = [(TARGET_BATCH_SIZE, VARIANT_CONNECTIONS)]
    variants = {
        "consumer.py running": measure_service(False, True, variant_point, seconds, rounds),
    }
    if importlib.util.find_spec("gears_registration") is not None:
        variants["RedisGears 2 library registered"] = measure_service(
            True, False, variant_point, seconds, rounds
        )
    return report(results, variants, seconds, rounds)


def table_row(label, runs):
    counts = ("errors", "status_errors")
    figures = {name: harness.median([run[name] for run in runs])
               for name in runs[0] if name not in counts}
    errors = sum(run["errors"] for run in runs)
    status_errors = sum(run["status_errors"] for run in runs)
    row = label + [
        figures["events_per_sec"], figures["p50_ms"], figures["p99_ms"],
        figures["service_cpu_ms"], figures["redis_cpu_ms"], figures["consumer_cpu_ms"],
        f"{figures['script_share']:.0%}", f"{figures['cpu_share']:.0%}",
        figures["estimate"], f"{errors} ({status_errors})",
    ]
    return row, figures


FIGURE_HEADERS = ["events/s", "p50 ms", "p99 ms", "gunicorn CPU ms/1k", "redis CPU ms/1k",
                  "consumer.py CPU ms/1k", "EVALSHA wall share", "machine CPU share",
                  "CPU-bound events/s (estimate)", "errors (HTTP >= 400)"]


def report(results, variants, seconds, rounds):
    rows = []
    best = 0.0
    for (batch_size, connections), runs in results.items():
        row, figures = table_row([batch_size, connections], runs)
        rows.append(row)
        if batch_size == TARGET_BATCH_SIZE:
            best = max(best, figures["events_per_sec"])
    harness.print_table(
        f"POST /batch, no stream consumer: median of {rounds} wrk run(s) of {seconds} s each",
        ["batch size", "connections", *FIGURE_HEADERS],
        rows,
    )

    variant_rows = []
    for name, variant in variants.items():
        for (batch_size, connections), runs in variant.items():
            variant_rows.append(table_row([name, batch_size, connections], runs)[0])
    harness.print_table(
        "POST /batch with a stream consumer",
        ["consumer", "batch size", "connections", *FIGURE_HEADERS],
        variant_rows,
    )
    print(harness.CPU_COLUMNS_NOTE)

    met = best >= TARGET_EVENTS_PER_SEC
    print(harness.verdict(
        met, f">= {TARGET_EVENTS_PER_SEC:,} events/s with batches of {TARGET_BATCH_SIZE:,}"
    ))
    return {"events_per_sec": best, "target_met": met}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="one 3 s run per point instead of three 10 s runs"
    )
    args = parser.parse_args(argv)
    harness.print_machine()
    run(quick=args.quick)


if __name__ == "__main__":
    main()
