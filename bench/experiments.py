"""Measure proposed changes to files outside bench/ without editing them.

    pip install --target DIR hiredis==3.5.0 orjson==3.13.0
    python -m bench.experiments --extras DIR [--quick]

Each variant runs the service under gunicorn.conf.py against one Redis
Stack server, and wrk loads the variants in turn, round after round, so
that the machine's drift hits them alike:

- baseline: the service as it is.
- hiredis: the same code with hiredis importable, so that redis-py packs
  commands and parses replies in C.
- hiredis + orjson: also orjson as Flask's JSON provider (`bench/orjson_app.py`).
- 2 workers: WEB_CONCURRENCY=2 instead of the default of two workers per CPU.
- hiredis, 2 workers: both.

The loads are `POST /` at 32 connections and `POST /batch` of 1,000 clicks
at 4 connections. The table gives the rate and the CPU time per event of
gunicorn plus redis-server, each also relative to the baseline. A second
table times `consumer.py` draining a backlog with and without hiredis.
"""

import argparse
import importlib.util
import os
import time

from bench import harness, stream_consumer

ROUNDS, ROUNDS_QUICK = 3, 1
DRAIN_EVENTS, DRAIN_EVENTS_QUICK = 100_000, 30_000
SECONDS, SECONDS_QUICK = 10, 4
LOADS = {
    "POST /, 32 connections": ("wrk_clicks.lua", 32, 1),
    "POST /batch of 1,000, 4 connections": ("wrk_batches.lua", 4, 1000),
}


def variants(extras):
    """Return {name: (WSGI app, extra environment)}."""
    python_path = os.pathsep.join(filter(None, [extras, os.environ.get("PYTHONPATH")]))
    return {
        "baseline": ("app:app", {}),
        "hiredis": ("app:app", {"PYTHONPATH": python_path}),
        "hiredis + orjson": ("bench.orjson_app:app", {"PYTHONPATH": python_path}),
        "2 workers": ("app:app", {"WEB_CONCURRENCY": "2"}),
        "hiredis, 2 workers": ("app:app", {"PYTHONPATH": python_path, "WEB_CONCURRENCY": "2"}),
    }


def check_extras(extras):
    """Raise BenchError unless `extras` contains hiredis and orjson, and warn when the baseline has them."""
    for module in ("hiredis", "orjson"):
        if importlib.util.find_spec(module) is not None:
            print(f"NOTE: {module} is installed in this environment, so the baseline uses it too.")
    for module in ("hiredis", "orjson"):
        if not os.path.isdir(os.path.join(extras, module)):
            raise harness.BenchError(
                f"{module} is missing from {extras}: run "
                f"pip install --target {extras} hiredis==3.5.0 orjson==3.13.0"
            )


def load(app, server, script, connections, batch_size, seconds):
    meter = harness.CpuMeter(app=app.process.pid, redis=server.process.pid).start()
    arguments = (f"x{time.time_ns()}",) if batch_size == 1 else (f"x{time.time_ns()}", batch_size)
    figures = harness.run_wrk(app.url, connections, seconds, script, arguments)
    cpu = meter.stop()
    events = max(figures["requests"] * batch_size, 1)
    return {
        "events_per_sec": figures["rps"] * batch_size,
        "cpu_us": 1e6 * (cpu["app"] + cpu["redis"]) / events,
        "p99_ms": figures["p99_ms"],
        "errors": figures["errors"],
    }


def run(extras, quick=False):
    check_extras(extras)
    harness.require_wrk()
    rounds = ROUNDS_QUICK if quick else ROUNDS
    seconds = SECONDS_QUICK if quick else SECONDS
    server = harness.start_redis()
    apps = {}
    results = {}
    try:
        for name, (app_spec, env) in variants(extras).items():
            service_env = harness.service_env(server.url, STREAM_CONSUMER="worker", **env)
            apps[name] = harness.GunicornApp(name, app_spec, service_env).start()
        for app in apps.values():
            harness.run_wrk(app.url, 8, 2, "wrk_clicks.lua", (f"warm-{time.time_ns()}",))
        for round_index in range(rounds):
            order = list(apps.values())
            if round_index % 2:
                order.reverse()
            for load_name, (script, connections, batch_size) in LOADS.items():
                for app in order:
                    figures = load(app, server, script, connections, batch_size, seconds)
                    results.setdefault((load_name, app.name), []).append(figures)
    finally:
        for app in apps.values():
            app.stop()
        server.stop()
    return report(results, rounds, seconds)


def compare_consumers(extras, rounds, events):
    """Time consumer.py draining `events` entries, without and with hiredis, in turn."""
    python_path = os.pathsep.join(filter(None, [extras, os.environ.get("PYTHONPATH")]))
    results = {}
    for _ in range(rounds):
        for name, env in (("baseline", {}), ("hiredis", {"PYTHONPATH": python_path})):
            server = harness.start_redis()
            consumer = stream_consumer.WorkerConsumer(server, **env)
            try:
                drain = stream_consumer.measure_drain(consumer, server, events)
            finally:
                consumer.stop()
                server.stop()
            results.setdefault(name, []).append(drain)
    rows = []
    for name, runs in results.items():
        rows.append([
            name, harness.median([run["events_per_sec"] for run in runs]),
            harness.median([run["consumer_cpu_ms"] for run in runs]),
            harness.median([run["redis_cpu_ms"] for run in runs]),
        ])
    harness.print_table(
        f"consumer.py draining {events:,} events: median of {rounds} run(s)",
        ["variant", "events/s after start-up", "consumer CPU ms/1k", "redis CPU ms/1k"],
        rows,
    )


def report(results, rounds, seconds):
    rows = []
    for load_name in LOADS:
        baseline = None
        for name in variants("").keys():
            runs = results[(load_name, name)]
            rate = harness.median([run["events_per_sec"] for run in runs])
            cpu_us = harness.median([run["cpu_us"] for run in runs])
            if baseline is None:
                baseline = (rate, cpu_us)
            rows.append([
                load_name, name, rate, f"{rate / baseline[0]:.0%}", cpu_us,
                f"{cpu_us / baseline[1]:.0%}",
                harness.median([run["p99_ms"] for run in runs]),
                sum(run["errors"] for run in runs),
            ])
    harness.print_table(
        f"Proposed changes: median of {rounds} wrk run(s) of {seconds} s each",
        ["load", "variant", "events/s", "of baseline", "CPU us/event (gunicorn + redis)",
         "of baseline", "p99 ms", "errors"],
        rows,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extras", required=True, metavar="DIR",
                        help="folder with hiredis and orjson installed by pip install --target")
    parser.add_argument("--quick", action="store_true",
                        help=f"{ROUNDS_QUICK} round of {SECONDS_QUICK} s instead of "
                             f"{ROUNDS} rounds of {SECONDS} s")
    args = parser.parse_args(argv)
    harness.print_machine()
    extras = os.path.abspath(args.extras)
    run(extras, quick=args.quick)
    compare_consumers(extras, ROUNDS_QUICK if args.quick else ROUNDS,
                      DRAIN_EVENTS_QUICK if args.quick else DRAIN_EVENTS)


if __name__ == "__main__":
    main()
