"""Processes, load generation and reporting shared by the benchmarks.

Everything here listens on or connects to 127.0.0.1 only. Each benchmark
starts its own Redis Stack server (`tools.redis_stack`), runs the service
under the checked-in `gunicorn.conf.py`, drives load for a bounded time and
prints a table.
"""

import json
import math
import os
import platform
import resource
import runpy
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import redis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tools.redis_stack import RedisStackServer, free_port  # noqa: E402

BENCH_DIR = os.path.join(ROOT, "bench")
DATA_DIR = os.path.join(os.path.dirname(ROOT), "shared", "data")
TALKINGDATA_SAMPLE = os.path.join(DATA_DIR, "talkingdata_train_sample.csv")

START_TIMEOUT_SEC = 30.0  # for gunicorn or consumer.py to come up
STOP_TIMEOUT_SEC = 15.0
WRK_INSTALL_HINT = "install it with: apt-get update && apt-get install -y wrk"
WRK_GRACE_SEC = 30.0  # on top of the run length, before a hung wrk is killed
BENCH_CLIENT_TIMEOUT_SEC = 300.0


class BenchError(RuntimeError):
    """A benchmark cannot run: a tool is missing or a process did not start."""


def machine_description():
    """Return the facts that a figure depends on: cores, CPU model, memory, load."""
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load_1, load_5, load_15 = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(memory_gib, 1),
        "load_average": f"{load_1:.2f} {load_5:.2f} {load_15:.2f}",
        "python": platform.python_version(),
    }


def print_machine():
    """Print the machine description on one line."""
    facts = machine_description()
    print(
        f"Machine: {facts['cpus']} CPUs ({facts['cpu_model']}), {facts['memory_gib']} GiB, "
        f"load average {facts['load_average']}, Python {facts['python']}"
    )


def start_redis(gears=False):
    """Start a Redis Stack server on a free loopback port and return it."""
    return RedisStackServer(gears=gears).start()


def redis_client(url):
    """Return a client for the benchmark's own commands, with a wide reply timeout.

    redis-py waits 5 s for a reply by default, and a server that registers
    a RedisGears library on a long stream can stay busy for longer.
    """
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=BENCH_CLIENT_TIMEOUT_SEC)


def service_env(redis_url, **settings):
    """Return the environment of a service or consumer process for `redis_url`.

    The parent's REDIS_* and gunicorn variables are dropped, so the checked-in
    gunicorn.conf.py defaults apply unless a benchmark passes its own.
    """
    dropped = ("REDIS_", "WEB_CONCURRENCY", "GUNICORN_", "CLICK_SPAM_", "TRUST_CLIENT_TS")
    env = {name: value for name, value in os.environ.items() if not name.startswith(dropped)}
    env["REDIS_URL"] = redis_url
    env["HOST"] = "127.0.0.1"
    env["LOG_LEVEL"] = "WARNING"
    env.update({name: str(value) for name, value in settings.items()})
    return env


class BackgroundProcess:
    """A subprocess of this project with its output in a log file."""

    def __init__(self, name, command, env):
        self.name = name
        self.command = command
        self.env = env
        self.log_file = tempfile.NamedTemporaryFile(
            prefix=f"bench-{name}-", suffix=".log", delete=False
        )
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            self.command, cwd=ROOT, env=self.env,
            stdout=self.log_file, stderr=subprocess.STDOUT,
        )
        return self

    def log_tail(self, lines=30):
        with open(self.log_file.name, encoding="utf-8", errors="replace") as log:
            return "".join(log.readlines()[-lines:])

    def check_running(self):
        if self.process.poll() is not None:
            raise BenchError(
                f"{self.name} exited with status {self.process.returncode}; "
                f"log {self.log_file.name}:\n{self.log_tail()}"
            )

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_SEC)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_SEC)
        self.log_file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()


class GunicornApp(BackgroundProcess):
    """A WSGI app under `gunicorn -c gunicorn.conf.py`, listening on 127.0.0.1."""

    def __init__(self, name, app_spec, env, port=None):
        self.port = port or free_port()
        env = dict(env, PORT=str(self.port), HOST="127.0.0.1")
        command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", app_spec]
        super().__init__(name, command, env)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/"

    def start(self):
        super().start()
        self.wait_until_healthy()
        return self

    def wait_until_healthy(self):
        deadline = time.monotonic() + START_TIMEOUT_SEC
        while time.monotonic() < deadline:
            self.check_running()
            try:
                urllib.request.urlopen(f"{self.url}healthz", timeout=1).close()
                return
            except OSError:  # refused while the workers boot
                time.sleep(0.1)
        self.stop()
        raise BenchError(
            f"{self.name} did not respond to /healthz within {START_TIMEOUT_SEC:g} s; "
            f"see its log {self.log_file.name}"
        )


def gunicorn_workers(**settings):
    """Return the number of workers that gunicorn.conf.py starts with this environment.

    gunicorn.conf.py reads os.environ when it runs, so the service's
    environment is put in place for that moment and restored after.
    """
    env = service_env("redis://127.0.0.1:1/0", **settings)
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        return runpy.run_path(os.path.join(ROOT, "gunicorn.conf.py"))["workers"]
    finally:
        os.environ.clear()
        os.environ.update(saved)


def start_service(redis_url, **settings):
    """Start the fraud detector under gunicorn.conf.py; return the running GunicornApp."""
    return GunicornApp("service", "app:app", service_env(redis_url, **settings)).start()


def start_noop_app(redis_url):
    """Start `bench/noop_app.py` under the same gunicorn.conf.py.

    REDIS_URL is set only so that gunicorn.conf.py does not start the
    embedded server; the app never connects.
    """
    return GunicornApp("noop", "bench.noop_app:app", service_env(redis_url)).start()


def start_consumer(redis_url, **settings):
    """Start `python consumer.py` as its own process, as in production."""
    return BackgroundProcess(
        "consumer", [sys.executable, "consumer.py"], service_env(redis_url, **settings)
    ).start()


def require_wrk():
    """Return the path of wrk, or raise BenchError with the command that installs it."""
    path = shutil.which("wrk")
    if path is None:
        raise BenchError(f"wrk, the HTTP load generator, is not installed: {WRK_INSTALL_HINT}")
    return path


def run_wrk(url, connections, duration_sec, script, script_args=(), threads=1):
    """Run wrk with a Lua script from bench/ and return its figures as a dict.

    The script's done() prints one JSON line with requests, duration_us,
    errors, status_errors, p50_us and p99_us. The dict has requests, rps,
    p50_ms, p99_ms, errors (socket errors and timeouts plus HTTP statuses of
    400 or more), status_errors, seconds, and client_cpu_sec, the CPU time
    of wrk itself. One wrk thread is enough for the rates reached here and
    leaves the most CPU to the server.
    """
    command = [
        require_wrk(),
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{duration_sec}s",
        "--timeout", "10s",
        "-s", os.path.join(BENCH_DIR, script),
        url,
    ]
    if script_args:
        command += ["--", *[str(arg) for arg in script_args]]
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=duration_sec + WRK_GRACE_SEC
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish within {duration_sec + WRK_GRACE_SEC:g} s") from None
    if completed.returncode != 0:
        raise BenchError(f"wrk failed with status {completed.returncode}: {completed.stderr.strip()}")

    figures = None
    for line in completed.stdout.splitlines():
        if line.startswith("{"):
            figures = json.loads(line)
    if figures is None:
        raise BenchError(f"wrk printed no JSON summary line:\n{completed.stdout}")
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu_sec = (children_after.ru_utime + children_after.ru_stime
                      - children_before.ru_utime - children_before.ru_stime)
    seconds = figures["duration_us"] / 1e6
    return {
        "client_cpu_sec": client_cpu_sec,
        "seconds": seconds,
        "requests": figures["requests"],
        "errors": figures["errors"] + figures["status_errors"],
        "status_errors": figures["status_errors"],
        "rps": figures["requests"] / seconds if seconds else 0.0,
        "p50_ms": figures["p50_us"] / 1000,
        "p99_ms": figures["p99_us"] / 1000,
    }


def cpu_seconds(pid):
    """Return the user + system CPU seconds of a process and its live descendants.

    Reads /proc, so it works on Linux only. The gunicorn master's figure
    includes its workers; a redis-server has no children.
    """
    clock_ticks = os.sysconf("SC_CLK_TCK")
    parents = {}
    times = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                # The command name may contain spaces, so split after its ")".
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # the process exited meanwhile
            continue
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / clock_ticks

    tree = {pid}
    grew = True
    while grew:
        children = {child for child, parent in parents.items() if parent in tree} - tree
        tree |= children
        grew = bool(children)
    return sum(times.get(member, 0.0) for member in tree)


class CpuMeter:
    """CPU seconds used by named processes between `start()` and `stop()`."""

    def __init__(self, **pids):
        self.pids = pids
        self.before = {}
        self.used = {}

    def start(self):
        self.before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        return self

    def stop(self):
        self.used = {
            name: cpu_seconds(pid) - self.before[name] for name, pid in self.pids.items()
        }
        return self.used


CPU_COLUMNS_NOTE = (
    "Machine CPU share is the CPU time of the server processes and the load generator "
    "over the wall time times the CPU count. Far below 100% means that other processes "
    "had the CPUs. The CPU-bound estimate is the CPU count divided by the server CPU "
    "time per event, capped by one core for redis-server, which runs commands on one thread."
)


def machine_share(cpu_sec, wall_sec):
    """Return the share of the machine's CPU time that `cpu_sec` is over `wall_sec`."""
    return cpu_sec / (wall_sec * os.cpu_count()) if wall_sec else 0.0


def cpu_bound_rate(total_ms_per_1000_events, redis_ms_per_1000_events=0.0):
    """Return an estimate of the events per second that the machine's cores could serve.

    Every core serves events at the measured total CPU cost, but redis-server
    runs its commands on one thread, so one core bounds its share.
    """
    if not total_ms_per_1000_events:
        return None
    rate = os.cpu_count() * 1e6 / total_ms_per_1000_events
    if redis_ms_per_1000_events:
        rate = min(rate, 1e6 / redis_ms_per_1000_events)
    return rate


def percentile(values, share):
    """Return the nearest-rank percentile of `values` (0 < share <= 100), or NaN if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(share / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values):
    """Return the median of `values`, or NaN if empty."""
    return statistics.median(values) if values else math.nan


def format_number(value):
    """Format a figure for a table: thousands separators, a few significant digits."""
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int) or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if 0 < abs(value) < 0.01:
        return f"{value:.2g}"
    return f"{value:.2f}"


def print_table(title, headers, rows):
    """Print a Markdown table, so the output can be pasted into docs/performance.md."""
    cells = [[format_number(value) for value in row] for row in rows]
    widths = [
        max(len(str(header)), *(len(row[column]) for row in cells)) if cells else len(str(header))
        for column, header in enumerate(headers)
    ]
    print(f"\n{title}\n")
    print("| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row, raw in zip(cells, rows):
        aligned = [
            cell.ljust(width) if isinstance(value, str) else cell.rjust(width)
            for cell, value, width in zip(row, raw, widths)
        ]
        print("| " + " | ".join(aligned) + " |")
    sys.stdout.flush()


def verdict(met, target):
    """Return the line that states whether a target is met."""
    return f"Target {target}: {'met' if met else 'NOT met'}"
