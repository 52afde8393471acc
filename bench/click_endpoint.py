"""Benchmark 1: `POST /` against a do-nothing Flask endpoint, under gunicorn.conf.py.

    python -m bench.click_endpoint [--quick]

Both apps run at once under the checked-in gunicorn settings. wrk
(`apt-get install -y wrk`) loads them in turn at each concurrency, so that
the machine's drift hits both alike. Every request carries a new device id,
so click spam does not decide the verdicts. Two variants follow at the
highest concurrency. The first reuses device ids in the order of the
TalkingData sample, and the second runs `consumer.py` beside the service.

Besides requests per second and latency, each run records the CPU time that
the app's gunicorn processes and redis-server used per request. On a shared
machine the CPU cost moves less than the request rate does.
"""

import argparse
import csv
import os
import tempfile
import time

from bench import harness

CONCURRENCY_LEVELS = (1, 8, 32)  # open connections of wrk
TARGET_CONCURRENCY = 32
TARGET_SHARE = 0.80  # of the do-nothing endpoint's requests per second
WARM_UP_SEC = 2
WRK_SCRIPT = "wrk_clicks.lua"


def write_talkingdata_devices(path=harness.TALKINGDATA_SAMPLE, limit=100_000):
    """Write the device ids of the TalkingData sample, in file order, to a temporary file.

    The id is `{ip}-{device}-{os}`, the fingerprint that replay.py sends.
    Returns the path, or None when the sample is missing.
    """
    if not os.path.exists(path):
        return None
    output = tempfile.NamedTemporaryFile(
        "w", prefix="bench-devices-", suffix=".txt", delete=False, encoding="utf-8"
    )
    with open(path, encoding="utf-8", newline="") as sample, output:
        for index, row in enumerate(csv.DictReader(sample)):
            if index >= limit:
                break
            output.write(f"{row['ip']}-{row['device']}-{row['os']}\n")
    return output.name


def load(app, server, connections, seconds, prefix, device_file="", consumer=None):
    """Run wrk against `app` and return its figures with the CPU microseconds per request."""
    pids = {"app": app.process.pid, "redis": server.process.pid}
    if consumer:
        pids["consumer"] = consumer.process.pid
    meter = harness.CpuMeter(**pids).start()
    started = time.monotonic()
    figures = harness.run_wrk(app.url, connections, seconds, WRK_SCRIPT, (prefix, device_file))
    elapsed = time.monotonic() - started
    cpu = meter.stop()
    requests = max(figures["requests"], 1)
    figures["app_cpu_us"] = 1e6 * cpu["app"] / requests
    figures["redis_cpu_us"] = 1e6 * cpu["redis"] / requests
    figures["consumer_cpu_us"] = 1e6 * cpu.get("consumer", 0.0) / requests
    figures["cpu_share"] = harness.machine_share(
        sum(cpu.values()) + figures["client_cpu_sec"], elapsed
    )
    return figures


def compare(service, noop, server, seconds, rounds):
    """Load both apps at each concurrency and return {(name, connections): [figures per round]}."""
    results = {}
    for connections in CONCURRENCY_LEVELS:
        for round_index in range(rounds):
            # Alternate which app goes first, so that a drift in load favours neither.
            apps = (service, noop) if round_index % 2 == 0 else (noop, service)
            for app in apps:
                prefix = f"{app.name}-c{connections}-r{round_index}-{time.time_ns()}"
                figures = load(app, server, connections, seconds, prefix)
                results.setdefault((app.name, connections), []).append(figures)
    return results


def run_variants(service, noop, server, seconds, rounds, device_file):
    """Load the service at TARGET_CONCURRENCY with reused devices, then with consumer.py running."""
    variants = {}
    if device_file:
        variants["service, TalkingData device reuse"] = [
            load(service, server, TARGET_CONCURRENCY, seconds, f"reuse-{time.time_ns()}",
                 device_file)
            for _ in range(rounds)
        ]
    with harness.start_consumer(server.url) as consumer:
        for app in (service, noop):
            variants[f"{app.name}, consumer.py running"] = [
                load(app, server, TARGET_CONCURRENCY, seconds, f"consumer-{time.time_ns()}",
                     consumer=consumer)
                for _ in range(rounds)
            ]
    return variants


def summarise(runs):
    """Return the median of each figure over the runs, and the total of their errors."""
    summary = {name: harness.median([run[name] for run in runs])
               for name in ("rps", "p50_ms", "p99_ms", "app_cpu_us", "redis_cpu_us",
                            "consumer_cpu_us", "cpu_share")}
    summary["errors"] = sum(run["errors"] for run in runs)
    return summary


def run(quick=False):
    """Run the benchmark, print its tables and return the figures."""
    seconds = 3 if quick else 10
    rounds = 1 if quick else 3
    harness.require_wrk()
    device_file = write_talkingdata_devices()
    server = harness.start_redis()
    try:
        with harness.start_service(server.url) as service, \
                harness.start_noop_app(server.url) as noop:
            for app in (service, noop):
                load(app, server, 8, WARM_UP_SEC, f"warm-{app.name}-{time.time_ns()}")
            results = compare(service, noop, server, seconds, rounds)
            variants = run_variants(service, noop, server, seconds, rounds, device_file)
    finally:
        server.stop()
        if device_file:
            os.unlink(device_file)
    return report(results, variants, seconds, rounds)


def report(results, variants, seconds, rounds):
    rows = []
    ratios = {}
    for connections in CONCURRENCY_LEVELS:
        service = summarise(results[("service", connections)])
        noop = summarise(results[("noop", connections)])
        ratios[connections] = service["rps"] / noop["rps"] if noop["rps"] else 0.0
        service_cpu = service["app_cpu_us"] + service["redis_cpu_us"]
        rows.append([
            connections,
            service["rps"], service["p50_ms"], service["p99_ms"],
            noop["rps"], noop["p50_ms"], noop["p99_ms"],
            f"{ratios[connections]:.0%}",
            service["app_cpu_us"], service["redis_cpu_us"], noop["app_cpu_us"],
            f"{noop['app_cpu_us'] / service_cpu:.0%}" if service_cpu else "-",
            f"{service['cpu_share']:.0%}/{noop['cpu_share']:.0%}",
            service["errors"] + noop["errors"],
        ])
    harness.print_table(
        f"POST /: median of {rounds} wrk run(s) of {seconds} s each, a new device id per request",
        ["connections", "service req/s", "p50 ms", "p99 ms", "noop req/s", "p50 ms", "p99 ms",
         "service/noop req/s", "service gunicorn CPU us/req", "service redis CPU us/req",
         "noop CPU us/req", "noop/service CPU", "machine CPU share service/noop", "errors"],
        rows,
    )

    variant_rows = []
    for name, runs in variants.items():
        figures = summarise(runs)
        variant_rows.append([
            name, figures["rps"], figures["p50_ms"], figures["p99_ms"],
            figures["app_cpu_us"], figures["redis_cpu_us"], figures["consumer_cpu_us"],
            f"{figures['cpu_share']:.0%}", figures["errors"],
        ])
    harness.print_table(
        f"Variants at {TARGET_CONCURRENCY} connections",
        ["variant", "req/s", "p50 ms", "p99 ms", "gunicorn CPU us/req", "redis CPU us/req",
         "consumer.py CPU us/req", "machine CPU share", "errors"],
        variant_rows,
    )
    print(harness.CPU_COLUMNS_NOTE)

    met = ratios[TARGET_CONCURRENCY] >= TARGET_SHARE
    print(harness.verdict(
        met, f">= {TARGET_SHARE:.0%} of the do-nothing endpoint's req/s at "
             f"{TARGET_CONCURRENCY} connections"
    ))
    return {"ratios": ratios, "target_met": met}


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
