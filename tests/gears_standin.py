"""A stand-in for the RedisGears 1.x Python runtime, to test the gear in
gears/stream_consumer_gear.py where no RedisGears 1.x server can run.

`GearsRuntime.pyexecute` runs a gear's code as RG.PYEXECUTE does, with `GB`,
`GearsBuilder`, `execute`, `atomic` and `log` in its globals. Its `execute`
sends the command to a real Redis server. `GearsRuntime.deliver` then feeds
the registered function the way the RedisGears 1.x StreamReader reads a
stream (src/readers/streams_reader.c of RedisGears 1.2): through the consumer
group `__gears_consumer_group__`, created at id 0 so the first run reads the
stream from its first entry, pending entries first, one batch per execution,
acknowledged after the execution. `StandinClient` wraps a redis-py client so
that `MODULE LIST` shows the `rg` module and the RG.PYEXECUTE,
RG.DUMPREGISTRATIONS and RG.UNREGISTER commands reach the stand-in.

What the stand-in does not reproduce:
- atomicity: `atomic()` does nothing, so nothing else may write to the
  server while `deliver` runs;
- the interpreter: the gear runs under the test's Python, not the Python 3.7
  of RedisGears 1.x (tests/test_gears.py parses the gear as Python 3.7);
- exception types: a failed `execute` raises redis.ResponseError;
- the reply conversion of RedisGears: `execute` returns redis-py's RESP2
  replies without response callbacks, decoded as UTF-8 strings;
- the "retry" failure policy, cluster mode and every reader but StreamReader.
"""

import contextlib
import logging

import redis

logger = logging.getLogger(__name__)

READER_GROUP = "__gears_consumer_group__"
READER_CONSUMER = "__gears_client__"
REGISTRATION_ID_PREFIX = "0" * 40
MODES = ("async", "async_local", "sync")
FAILURE_POLICIES = ("continue", "abort")


def resp2_client(client):
    """Return a client of the same server that speaks RESP2 and parses no reply.

    RedisGears 1.x runs on Redis 6, whose module API returns RESP2 replies
    (ZRANGE WITHSCORES as a flat list of strings, XREADGROUP as a list).
    """
    options = client.connection_pool.connection_kwargs
    raw = redis.Redis(
        host=options["host"], port=options["port"], db=options.get("db", 0),
        username=options.get("username"), password=options.get("password"),
        decode_responses=True, protocol=2,
    )
    raw.response_callbacks.clear()
    return raw


class Registration:
    """One function registered with `GearsBuilder.register`, and its counters."""

    def __init__(self, registration_id, description, steps, prefix, batch, duration,
                 mode, on_failed_policy, trim_stream):
        self.id = registration_id
        self.description = description
        self.steps = steps
        self.prefix = prefix
        self.batch = batch
        self.duration = duration
        self.mode = mode
        self.on_failed_policy = on_failed_policy
        self.trim_stream = trim_stream
        self.status = "OK"
        self.num_triggered = 0
        self.num_success = 0
        self.num_failures = 0
        self.last_error = None

    def matches(self, key):
        if self.prefix.endswith("*"):
            return key.startswith(self.prefix[:-1])
        return key == self.prefix

    def dump(self):
        """Return the registration as RG.DUMPREGISTRATIONS lists it."""
        return [
            "id", self.id,
            "reader", "StreamReader",
            "desc", self.description,
            "RegistrationData", [
                "mode", self.mode,
                "numTriggered", self.num_triggered,
                "numSuccess", self.num_success,
                "numFailures", self.num_failures,
                "numAborted", 0,
                "lastError", self.last_error,
                "args", [
                    "batchSize", self.batch,
                    "durationMS", self.duration,
                    "stream", self.prefix,
                    "status", self.status,
                    "trimStream", int(self.trim_stream),
                    "onFailedPolicy", self.on_failed_policy,
                ],
            ],
            "PD", "{}",
        ]


class GearsRuntime:
    """The gear runtime: executes gear code and delivers stream entries to its registrations.

    Args:
        client: a redis-py client of the real server, with decode_responses=True.
    """

    def __init__(self, client):
        self.raw = resp2_client(client)
        self.registrations = []
        self.log_lines = []
        self.next_id = 1

    def close(self):
        self.raw.close()

    # The globals of a gear ------------------------------------------------

    def execute(self, command, *args):
        return self.raw.execute_command(command, *[str(arg) for arg in args])

    def log(self, message, level="notice"):
        self.log_lines.append((level, message))
        logger.log(logging.WARNING if level == "warning" else logging.INFO, "gear: %s", message)

    @staticmethod
    @contextlib.contextmanager
    def atomic():
        yield

    def builder_class(self):
        runtime = self

        class GearsBuilder:
            def __init__(self, reader="KeysReader", defaultArg="*", desc=None):
                if reader != "StreamReader":
                    raise NotImplementedError(f"the stand-in models the StreamReader only, not {reader}")
                self.description = desc
                self.steps = []

            def foreach(self, callback):
                self.steps.append(("foreach", callback))
                return self

            def map(self, callback):
                self.steps.append(("map", callback))
                return self

            def filter(self, callback):
                self.steps.append(("filter", callback))
                return self

            def register(self, prefix="*", convertToStr=True, collect=True, mode="async",
                         onRegistered=None, batch=1, duration=0, onFailedPolicy="continue",
                         onFailedRetryInterval=1, trimStream=True):
                if mode not in MODES:
                    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
                if onFailedPolicy not in FAILURE_POLICIES:
                    raise NotImplementedError(f"the stand-in has no failure policy {onFailedPolicy!r}")
                if onRegistered is not None:
                    onRegistered()
                runtime.add_registration(self.description, self.steps, prefix, batch, duration,
                                         mode, onFailedPolicy, trimStream)
                return "OK"

        return GearsBuilder

    # Commands ------------------------------------------------------------

    def pyexecute(self, code):
        """Run gear code as RG.PYEXECUTE does; return "OK"."""
        builder = self.builder_class()
        namespace = {
            "__name__": "__main__",
            "GB": builder,
            "GearsBuilder": builder,
            "execute": self.execute,
            "atomic": self.atomic,
            "log": self.log,
        }
        exec(compile(code, "<RG.PYEXECUTE>", "exec"), namespace)
        return "OK"

    def add_registration(self, description, steps, prefix, batch, duration, mode,
                         on_failed_policy, trim_stream):
        registration_id = f"{REGISTRATION_ID_PREFIX}-{self.next_id}"
        self.next_id += 1
        self.registrations.append(Registration(
            registration_id, description, list(steps), prefix, batch, duration, mode,
            on_failed_policy, trim_stream,
        ))

    def dump_registrations(self):
        return [registration.dump() for registration in self.registrations]

    def unregister(self, registration_id):
        for registration in self.registrations:
            if registration.id == registration_id:
                self.registrations.remove(registration)
                return "OK"
        raise redis.ResponseError(f"registration {registration_id} not found")

    # Delivery ------------------------------------------------------------

    def matching_streams(self, registration):
        if registration.prefix.endswith("*"):
            pattern = registration.prefix
            return sorted(self.raw.execute_command("SCAN", "0", "MATCH", pattern, "COUNT", "100000",
                                                   "TYPE", "stream")[1])
        if self.raw.execute_command("TYPE", registration.prefix) == "stream":
            return [registration.prefix]
        return []

    def read_batch(self, stream, count):
        """Return the next entries of `stream` for the reader group: pending ones first."""
        try:
            self.raw.execute_command("XGROUP", "CREATE", stream, READER_GROUP, "0")
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        for start in ("0", ">"):
            reply = self.raw.execute_command(
                "XREADGROUP", "GROUP", READER_GROUP, READER_CONSUMER,
                "COUNT", str(count), "STREAMS", stream, start,
            )
            entries = [entry for entry in (reply[0][1] if reply else []) if entry[1] is not None]
            if entries:
                return entries
        return []

    def run_execution(self, registration, stream, entries):
        registration.num_triggered += 1
        failed = False
        for entry_id, values in entries:
            record = {"key": stream, "id": entry_id, "value": dict(zip(values[::2], values[1::2]))}
            try:
                for step, callback in registration.steps:
                    if step == "foreach":
                        callback(record)
                    elif step == "map":
                        record = callback(record)
                    elif step == "filter" and not callback(record):
                        break
            except Exception as error:
                failed = True
                registration.last_error = repr(error)
        if failed:
            registration.num_failures += 1
            if registration.on_failed_policy == "abort":
                registration.status = "ABORTED"
                return
        else:
            registration.num_success += 1
        ids = [entry_id for entry_id, _ in entries]
        self.raw.execute_command("XACK", stream, READER_GROUP, *ids)
        if registration.trim_stream:
            self.raw.execute_command("XDEL", stream, *ids)

    def deliver(self, max_executions=100_000):
        """Run executions until no registration has an entry left; return the entries delivered."""
        delivered = 0
        for _ in range(max_executions):
            progressed = False
            for registration in list(self.registrations):
                if registration.status != "OK":
                    continue
                for stream in self.matching_streams(registration):
                    entries = self.read_batch(stream, registration.batch)
                    if entries:
                        self.run_execution(registration, stream, entries)
                        delivered += len(entries)
                        progressed = True
            if not progressed:
                return delivered
        raise RuntimeError(f"entries were still left after {max_executions} executions")


class StandinClient:
    """A redis-py client whose server appears to run RedisGears 1.x (module `rg`).

    RG.PYEXECUTE, RG.DUMPREGISTRATIONS and RG.UNREGISTER go to the stand-in
    runtime, `MODULE LIST` shows `rg` in place of `redisgears_2`, and every
    other command and method goes to the wrapped client.
    """

    def __init__(self, client, runtime):
        self.client = client
        self.runtime = runtime

    def execute_command(self, *args, **options):
        name = str(args[0]).upper()
        if name == "RG.PYEXECUTE":
            if len(args) > 2:
                raise NotImplementedError(f"the stand-in takes no RG.PYEXECUTE options: {args[2:]}")
            return self.runtime.pyexecute(args[1])
        if name == "RG.DUMPREGISTRATIONS":
            return self.runtime.dump_registrations()
        if name == "RG.UNREGISTER":
            return self.runtime.unregister(args[1])
        if name in ("TFUNCTION", "TFCALL", "TFCALLASYNC"):
            raise redis.ResponseError(f"unknown command '{args[0]}'")
        if name == "MODULE" and str(args[1]).upper() == "LIST":
            modules = [module for module in self.client.execute_command("MODULE", "LIST")
                       if module["name"] != "redisgears_2"]
            return [*modules, {"name": "rg", "ver": 10000, "path": "stand-in", "args": []}]
        return self.client.execute_command(*args, **options)

    def __getattr__(self, name):
        return getattr(self.client, name)
