"""Benchmark 2: Redis commands and round trips per click.

    python -m bench.redis_commands [--quick]

The service runs under gunicorn.conf.py against its own Redis Stack server.
MONITOR records every command while the benchmark sends clicks to `POST /`,
then batches to `POST /batch`, then lets `consumer.py` drain the stream.
MONITOR marks the commands that a script runs with the client "lua", so a
command from any other client is one round trip. `INFO commandstats` before and after each phase gives the
server's call counts, script-internal calls included, and the time per call.
"""

import argparse
import http.client
import json
import re
import threading
import time

import redis

from bench import harness

MARKER = "bench-phase"  # ECHO argument that separates the phases in the MONITOR output
MONITOR_LINE = re.compile(r'\[\d+ ([^\]]*)\] "([^"]*)"')
EXPECTED_SCRIPT_CALLS_PER_CLICK = 1
DRAIN_TIMEOUT_SEC = 60.0
WARM_UP_CLICKS = 40
# Commands of the benchmark's own connections, left out of the counts.
OWN_COMMANDS = {"info", "echo", "xinfo", "monitor"}
# Commands that redis-py sends once when it opens a connection.
CONNECTION_SETUP = {"hello", "client", "ping", "auth", "select"}


class CommandRecorder(threading.Thread):
    """A thread that reads MONITOR and counts commands per phase, apart for clients and scripts.

    A phase starts at `ECHO "bench-phase <name>"` and ends at the next
    marker. The phase "end" stops the thread.
    """

    def __init__(self, redis_url):
        super().__init__(name="monitor", daemon=True)
        self.client = redis.Redis.from_url(redis_url)
        self.started = threading.Event()
        self.phases = {}  # name -> {"client": {command: n}, "script": {command: n}}
        self.error = None

    def run(self):
        try:
            with self.client.monitor() as monitor:
                self.started.set()
                self.record(monitor.connection)
        except Exception as error:  # reported by the caller after join()
            self.error = error
            self.started.set()

    def record(self, connection):
        phase = None
        while True:
            line = connection.read_response()
            if isinstance(line, bytes):
                line = line.decode("utf-8", "replace")
            match = MONITOR_LINE.search(line)
            if not match:
                continue
            source, command = match.group(1), match.group(2).lower()
            if command == "echo" and MARKER in line:
                phase = line.rsplit('"', 2)[-2].removeprefix(f"{MARKER} ")
                if phase == "end":
                    return
                self.phases[phase] = {"client": {}, "script": {}}
                continue
            if phase is None or command in OWN_COMMANDS:
                continue
            counts = self.phases[phase]["script" if source == "lua" else "client"]
            counts[command] = counts.get(command, 0) + 1


def command_stats(client):
    """Return {command: (calls, usec)} from INFO commandstats.

    MONITOR names only the command (`xgroup`) where commandstats names the
    subcommand too (`xgroup|create`), so subcommands are summed into their
    command.
    """
    stats = {}
    for name, figures in client.info("commandstats").items():
        command = name.removeprefix("cmdstat_").split("|")[0]
        calls, usec = stats.get(command, (0, 0))
        stats[command] = (calls + figures["calls"], usec + figures["usec"])
    return stats


def stats_delta(before, after):
    delta = {}
    for name, (calls, usec) in after.items():
        old_calls, old_usec = before.get(name, (0, 0))
        if calls > old_calls and name not in OWN_COMMANDS:
            delta[name] = (calls - old_calls, usec - old_usec)
    return delta


def wait_for_workers(client, workers):
    """Wait until every gunicorn worker has connected to Redis.

    /healthz responds as soon as one worker is up, and a worker that boots
    later would prepare Redis in the middle of a phase.
    """
    deadline = time.monotonic() + harness.START_TIMEOUT_SEC
    while client.info("clients")["connected_clients"] < workers + 1:  # + this client
        if time.monotonic() > deadline:
            raise harness.BenchError(f"fewer than {workers} gunicorn workers connected to Redis")
        time.sleep(0.1)


def wait_for_drain(client, stream_key="data_stream", group="fraud-consumers"):
    """Wait until the consumer group has read and acknowledged every entry."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_SEC
    while time.monotonic() < deadline:
        for info in client.xinfo_groups(stream_key):
            if info["name"] == group and info["lag"] == 0 and info["pending"] == 0:
                return
        time.sleep(0.05)
    raise harness.BenchError(f"consumer.py did not drain the stream within {DRAIN_TIMEOUT_SEC:g} s")


def post_json(connection, path, body):
    connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    payload = response.read()
    if response.status != 200:
        raise harness.BenchError(f"POST {path} returned {response.status}: {payload[:200]!r}")
    return json.loads(payload)


def click(prefix, index):
    return {"device_id": f"{prefix}-d{index}", "ip": f"198.51.100.{index % 256}",
            "transaction_id": f"{prefix}-{index}"}


def send_clicks(port, clicks, prefix, connections=1):
    """Send `clicks` clicks to POST /, spread over parallel keep-alive connections."""
    def send(worker):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for index in range(worker, clicks, connections):
            post_json(connection, "/", click(prefix, index))
        connection.close()

    threads = [threading.Thread(target=send, args=(n,)) for n in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def send_batches(port, batches, batch_size):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for batch in range(batches):
        post_json(connection, "/batch", [click(f"batch{batch}", i) for i in range(batch_size)])
    connection.close()


def measure(server, clicks, batches, batch_size):
    """Run the three phases and return {phase: (events, MONITOR counts, commandstats delta)}."""
    client = harness.redis_client(server.url)
    recorder = CommandRecorder(server.url)
    phases = {}

    def record_phase(name, events, action, *args):
        client.echo(f"{MARKER} {name}")
        before = command_stats(client)
        action(*args)
        phases[name] = (events, before, command_stats(client))

    with harness.start_service(server.url) as service:
        wait_for_workers(client, harness.gunicorn_workers())
        # Parallel connections reach every worker, so each has its Redis
        # connections open before the counting starts.
        send_clicks(service.port, WARM_UP_CLICKS, "warm", connections=8)
        recorder.start()
        recorder.started.wait(10)

        # One keep-alive connection stays with one worker process, which
        # reuses its idle pooled Redis connection for every click.
        record_phase("POST /", clicks, send_clicks, service.port, clicks, "single", 1)
        record_phase(f"POST /batch of {batch_size}", batches * batch_size,
                     send_batches, service.port, batches, batch_size)

        total = WARM_UP_CLICKS + clicks + batches * batch_size
        with harness.start_consumer(server.url):
            record_phase(f"consumer.py, {total} events", total, wait_for_drain, client)
        client.echo(f"{MARKER} end")

    recorder.join(30)
    if recorder.error:
        raise harness.BenchError(f"MONITOR failed: {recorder.error}")
    empty = {"client": {}, "script": {}}
    return {
        name: (events, recorder.phases.get(name, empty), stats_delta(before, after))
        for name, (events, before, after) in phases.items()
    }


def report(results, clicks):
    for name, (events, monitored, delta) in results.items():
        rows = []
        commands = sorted(set(monitored["client"]) | set(monitored["script"]) | set(delta))
        for command in commands:
            sent = monitored["client"].get(command, 0)
            scripted = monitored["script"].get(command, 0)
            calls, usec = delta.get(command, (0, 0))
            rows.append([command, sent, sent / events, scripted, scripted / events,
                         usec / calls if calls else None])
        sent_total = sum(monitored["client"].values())
        scripted_total = sum(monitored["script"].values())
        rows.append(["all", sent_total, sent_total / events, scripted_total,
                     scripted_total / events, None])
        harness.print_table(
            f"{name}: Redis commands for {events:,} events (sent = round trips)",
            ["command", "sent", "sent/event", "in scripts", "in scripts/event", "usec/call"],
            rows,
        )

    single = results["POST /"][1]["client"]
    script_calls = single.get("evalsha", 0) + single.get("eval", 0)
    setup = {name: n for name, n in single.items() if name in CONNECTION_SETUP}
    others = {name: n for name, n in single.items()
              if name not in ("evalsha", "eval") and name not in CONNECTION_SETUP}
    met = script_calls == clicks * EXPECTED_SCRIPT_CALLS_PER_CLICK and not others
    print(f"\nPOST /: {script_calls} script calls for {clicks} clicks. Other commands sent: "
          f"{others or 'none'}. Connection set-up: {setup or 'none'}.")
    print(harness.verdict(met, "exactly one EVALSHA and no other round trip per click"))
    return {"target_met": met}


def run(quick=False):
    """Run the benchmark, print its tables and return the figures."""
    clicks = 200 if quick else 1000
    batches, batch_size = (2, 1000) if quick else (5, 1000)
    server = harness.start_redis()
    try:
        results = measure(server, clicks, batches, batch_size)
    finally:
        server.stop()
    return report(results, clicks)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="200 clicks and 2 batches instead of 1,000 and 5"
    )
    args = parser.parse_args(argv)
    harness.print_machine()
    run(quick=args.quick)


if __name__ == "__main__":
    main()
