"""Profile the service's gunicorn workers or consumer.py under load with py-spy.

    python -m bench.profile click|batch|consumer [--seconds N] [--output FILE]

py-spy (`pip install py-spy==0.4.3`) samples the thread that holds the GIL
in every gunicorn worker (or in consumer.py) while wrk, or a backlog in the
stream, keeps it busy. The table groups the samples by the layer whose code
is on the stack (inclusive: a sample counts for every layer on its stack)
and lists the functions with the most samples. `--output` keeps the
collapsed stacks, which flamegraph tools read.
"""

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time

from bench import harness

PY_SPY_INSTALL_HINT = "install it with: pip install py-spy==0.4.3"
SAMPLE_RATE = 250  # samples per second and process
TOP_FUNCTIONS = 25

# Layers, matched on the file of each frame ("function (path:line)", the path
# relative to its sys.path entry), in the order they are printed.
LAYERS = {
    "gunicorn (gthread worker, HTTP parsing)": ("(gunicorn/",),
    "werkzeug (request, response objects)": ("(werkzeug/",),
    "flask (dispatch, hooks, jsonify)": ("(flask/",),
    "json (encode, decode)": ("(json/",),
    "redis-py (pool, send, parse reply)": ("(redis/",),
    "prometheus_client (metrics)": ("(prometheus_client/",),
    "service: validation.py": ("(validation.py",),
    "service: fraud_checks.py": ("(fraud_checks.py",),
    "service: api.py, batch.py": ("(api.py", "(batch.py"),
    "service: metrics.py": ("(metrics.py",),
    "service: consumer.py": ("(consumer.py",),
    "logging": ("(logging/",),
}


def find_py_spy():
    path = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(path):
        raise harness.BenchError(f"py-spy is not installed: {PY_SPY_INSTALL_HINT}")
    return path


def record(pid, seconds, output, subprocesses):
    """Start py-spy on `pid` for `seconds` and return its Popen."""
    command = [find_py_spy(), "record", "--pid", str(pid), "--duration", str(seconds),
               "--rate", str(SAMPLE_RATE), "--gil", "--format", "raw", "--output", output]
    if subprocesses:
        command.append("--subprocesses")
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def read_stacks(path):
    """Return [(frames, count)] from py-spy's collapsed ("raw") output."""
    stacks = []
    with open(path, encoding="utf-8", errors="replace") as collapsed:
        for line in collapsed:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if stack and count.isdigit():
                # --subprocesses puts "process <pid>:<command>" frames first.
                frames = [frame for frame in stack.split(";") if not frame.startswith("process ")]
                stacks.append((frames, int(count)))
    return stacks


def frame_function(frame):
    """Return "function (file)" of a py-spy frame "function (path:line)", without the line."""
    name, _, location = frame.partition(" (")
    path = location.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({os.path.basename(path)})"


def summarise(stacks):
    total = sum(count for _, count in stacks)
    layers = collections.Counter()
    inclusive = collections.Counter()
    own = collections.Counter()
    for frames, count in stacks:
        for layer, patterns in LAYERS.items():
            if any(pattern in frame for frame in frames for pattern in patterns):
                layers[layer] += count
        for function in {frame_function(frame) for frame in frames}:
            inclusive[function] += count
        own[frame_function(frames[-1])] += count
    return total, layers, inclusive, own


def report(title, stacks):
    total, layers, inclusive, own = summarise(stacks)
    if not total:
        raise harness.BenchError("py-spy recorded no samples")
    harness.print_table(
        f"{title}: share of {total:,} GIL-holding samples whose stack includes each layer",
        ["layer", "share"],
        [[layer, f"{layers[layer] / total:.0%}"] for layer in LAYERS],
    )
    harness.print_table(
        f"{title}: functions with the most samples of their own code",
        ["function", "own", "inclusive"],
        [[function, f"{count / total:.1%}", f"{inclusive[function] / total:.1%}"]
         for function, count in own.most_common(TOP_FUNCTIONS)],
    )


def load_with_wrk(target, service, seconds):
    if target == "click":
        return harness.run_wrk(service.url, 32, seconds, "wrk_clicks.lua", (f"p{time.time_ns()}",))
    return harness.run_wrk(service.url, 4, seconds, "wrk_batches.lua", (f"p{time.time_ns()}", 1000))


def profile_service(target, seconds, output):
    server = harness.start_redis()
    try:
        with harness.start_service(server.url) as service:
            load_with_wrk(target, service, 2)  # warm-up
            spy = record(service.process.pid, seconds, output, subprocesses=True)
            figures = load_with_wrk(target, service, seconds + 1)
            _, errors = spy.communicate(timeout=seconds + 30)
    finally:
        server.stop()
    if spy.returncode != 0:
        raise harness.BenchError(f"py-spy failed: {errors.strip()}")
    print(f"wrk during the profile: {figures['rps']:.0f} requests/s (slowed by py-spy)")


def profile_consumer(seconds, output):
    from bench import stream_consumer

    server = harness.start_redis()
    consumer = stream_consumer.WorkerConsumer(server)
    try:
        client = stream_consumer.connect(server.url)
        settings = stream_consumer.make_settings(server.url, "worker")
        stream_consumer.setup.register_stream_consumer(client, settings)
        source = stream_consumer.ClickSource(client, settings, stream_consumer.FILL_DEVICES)
        for _ in range(200):
            source.check(stream_consumer.FILL_BATCH)
        pid = consumer.start()
        spy = record(pid, seconds, output, subprocesses=False)
        _, errors = spy.communicate(timeout=seconds + 30)
        groups = harness.redis_client(server.url).xinfo_groups(settings.stream_key)
        counted = groups[0]["entries-read"]
    finally:
        consumer.stop()
        server.stop()
    if spy.returncode != 0:
        raise harness.BenchError(f"py-spy failed: {errors.strip()}")
    print(f"consumer.py read {counted:,} entries during the profile")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=("click", "batch", "consumer"),
                        help="POST / at 32 connections, POST /batch of 1,000 at 4 connections, "
                             "or consumer.py draining 200,000 events")
    parser.add_argument("--seconds", type=int, default=10, help="length of the profile (default 10)")
    parser.add_argument("--output", help="file for the collapsed stacks (default: a temporary file)")
    args = parser.parse_args(argv)
    output = args.output or tempfile.NamedTemporaryFile(
        prefix=f"profile-{args.target}-", suffix=".txt", delete=False).name

    harness.print_machine()
    if args.target == "consumer":
        profile_consumer(args.seconds, output)
    else:
        profile_service(args.target, args.seconds, output)
    report(f"{args.target}", read_stacks(output))
    print(f"Collapsed stacks: {output}")


if __name__ == "__main__":
    main()
