"""Registration of the RedisGears stream consumers, and hand-over of the stream
between a gear and the built-in worker.

Exactly one consumer kind counts the events of the stream: the one named by
the owner key (`keys.stream_owner()`). The worker's script and both gears
read that key in the same atomic step that applies an entry, and apply
nothing while another kind owns the stream. Ownership changes only here,
under a Redis lock (SET NX PX), so processes that start at the same time
register once.

Registration checks the server itself, not a flag of its own: the library in
`TFUNCTION LIST` (RedisGears 2) or the registration in `RG.DUMPREGISTRATIONS`
(RedisGears 1.x), with a version hash of the code and the settings. A
missing or outdated registration is loaded again.

A gear that takes over the stream from the worker records the worker group's
last-delivered id (the hand-over id). It treats an entry up to that id as
applied unless the entry is still pending in the group. When the worker
takes the stream back, its group moves past the last entry the gear applied,
so no entry is counted twice.
"""

import contextlib
import hashlib
import json
import logging
import os
import time
import uuid

import redis

import constants
import keys

logger = logging.getLogger(__name__)

WORKER = constants.WORKER_CONSUMER
GEARS2 = constants.GEARS2_CONSUMER
GEARS1 = constants.GEARS1_CONSUMER

GEARS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gears")
LIBRARY_FILE = os.path.join(GEARS_DIR, "stream_consumer.js")
GEAR_FILE = os.path.join(GEARS_DIR, "stream_consumer_gear.py")

# Module names in MODULE LIST.
MODULE_KINDS = {"redisgears_2": GEARS2, "rg": GEARS1}

MAX_PENDING_ROUNDS = 10_000  # XPENDING pages of 1,000 entries acknowledged at a hand-over
LOCK_POLL_SEC = 0.05

RELEASE_LOCK_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class RegistrationError(RuntimeError):
    """A stream consumer cannot be registered, or the stream cannot change hands."""


def reply_to_dict(reply):
    """Return a reply of alternating names and values, or a parsed one, as a dict of str."""
    if isinstance(reply, dict):
        items = reply.items()
    else:
        items = zip(reply[::2], reply[1::2])
    return {_text(name): value for name, value in items}


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def parse_id(entry_id):
    """Return a stream entry id "<ms>-<seq>" as a tuple that sorts like the ids."""
    milliseconds, _, sequence = _text(entry_id).partition("-")
    return int(milliseconds), int(sequence or 0)


def read_source(path):
    with open(path, encoding="utf-8") as source:
        return source.read()


# Detection ------------------------------------------------------------------


def available_gears(client):
    """Return the RedisGears consumer kind that the server runs, or None.

    RedisGears 2 wins when a server somehow loads both modules.
    """
    try:
        modules = client.execute_command("MODULE", "LIST")
    except redis.ResponseError:
        return None  # fakeredis has no MODULE command, and no modules
    names = {_text(reply_to_dict(module).get("name")) for module in modules}
    for name in ("redisgears_2", "rg"):
        if name in names:
            return MODULE_KINDS[name]
    return None


def find_library(client):
    """Return the `TFUNCTION LIST` entry of the service's library, or None."""
    for library in client.execute_command("TFUNCTION", "LIST"):
        info = reply_to_dict(library)
        if _text(info.get("name")) == constants.GEARS_LIBRARY_NAME:
            return info
    return None


def gear_registrations(client):
    """Return the `RG.DUMPREGISTRATIONS` entries of the service's gear."""
    prefix = constants.GEAR_DESCRIPTION_PREFIX + " "
    registrations = []
    for registration in client.execute_command("RG.DUMPREGISTRATIONS"):
        info = reply_to_dict(registration)
        if str(_text(info.get("desc")) or "").startswith(prefix):
            registrations.append(info)
    return registrations


def gear_registered(client, kind):
    """Return True when the server has a registration of the service's gear of `kind`."""
    if kind == GEARS2:
        return find_library(client) is not None
    if kind == GEARS1:
        return bool(gear_registrations(client))
    return False


# Configuration and version --------------------------------------------------


def consumer_config(settings, kind):
    """Return the settings and key names that a gear of `kind` runs with."""
    return {
        "kind": kind,
        "stream_key": settings.stream_key,
        "group": constants.CONSUMER_GROUP,
        "window_ms": settings.window_ms,
        "retention_ms": settings.timeseries_retention_ms,
        "service_label": constants.SERIES_LABEL_SERVICE,
        "fraud_types": list(constants.FRAUD_TYPES),
        "trigger_name": constants.GEARS_TRIGGER_NAME,
        "device_prefix": keys.device_window(""),
        "series_prefix": keys.event_series(""),
        "owner_key": keys.stream_owner(),
        "applied_key": keys.gears_applied_id(),
        "handover_key": keys.gears_handover_id(),
        "failures_key": keys.gears_failures(),
        "errors_key": keys.gears_errors(),
        "errors_maxlen": constants.GEARS_ERRORS_MAXLEN,
    }


def canonical_json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def versioned_config(source, settings, kind):
    """Return the gear configuration with `version`: a hash of the code and the settings."""
    config = consumer_config(settings, kind)
    digest = hashlib.sha256((source + canonical_json(config)).encode("utf-8")).hexdigest()
    config["version"] = digest[:12]
    return config


def library_source():
    """Return the code of the RedisGears 2 library, after checking the library name it declares."""
    source = read_source(LIBRARY_FILE)
    header = source.splitlines()[0].split()
    if f"name={constants.GEARS_LIBRARY_NAME}" not in header:
        raise RegistrationError(
            f"{LIBRARY_FILE} must start with '#!js api_version=1.0 "
            f"name={constants.GEARS_LIBRARY_NAME}', got {' '.join(header)!r}"
        )
    return source


def gear_code(settings):
    """Return (code for RG.PYEXECUTE, version) of the RedisGears 1.x gear."""
    source = read_source(GEAR_FILE)
    config = versioned_config(source, settings, GEARS1)
    config["description"] = f"{constants.GEAR_DESCRIPTION_PREFIX} {config['version']}"
    code = f"GEAR_CONFIG_JSON = {canonical_json(config)!r}\n{source}"
    return code, config["version"]


# Lock -----------------------------------------------------------------------


@contextlib.contextmanager
def registration_lock(client, ttl_ms=constants.REGISTRATION_LOCK_TTL_MS,
                      wait_sec=constants.REGISTRATION_LOCK_WAIT_SEC):
    """Hold the registration lock, waiting up to `wait_sec` while another process holds it.

    The lock expires after `ttl_ms`, so a process that dies while holding it
    blocks the others for that long at most.
    """
    key = keys.registration_lock()
    token = uuid.uuid4().hex
    deadline = time.monotonic() + wait_sec
    while not client.set(key, token, nx=True, px=ttl_ms):
        if time.monotonic() >= deadline:
            raise RegistrationError(
                f"timed out after {wait_sec:g} s waiting for the registration lock {key}, "
                "which another process holds while it registers the stream consumer. Retry, "
                "or delete the key if no such process runs."
            )
        time.sleep(LOCK_POLL_SEC)
    try:
        yield
    finally:
        client.eval(RELEASE_LOCK_SCRIPT, 1, key, token)


# Hand-over ------------------------------------------------------------------


def group_last_delivered_id(client, stream_key):
    """Return the last-delivered id of the worker's consumer group, or None without one."""
    try:
        groups = client.xinfo_groups(stream_key)
    except redis.ResponseError:
        return None  # no such stream
    for group in groups:
        info = reply_to_dict(group)
        if _text(info.get("name")) == constants.CONSUMER_GROUP:
            return _text(info.get("last-delivered-id"))
    return None


def take_over_for_gear(client, settings, kind):
    """Make the gear of `kind` the owner and record the worker group's position.

    The owner is set first. From then on the worker's script applies
    nothing, so the worker applied every entry up to the recorded id that is
    not pending.
    """
    previous = client.get(keys.stream_owner())
    client.set(keys.stream_owner(), kind)
    handover_id = group_last_delivered_id(client, settings.stream_key) or "0-0"
    client.set(keys.gears_handover_id(), handover_id)
    logger.info(
        "Stream %s passes from %s to the %s consumer; entries up to %s belong to group %s",
        settings.stream_key, previous or "no consumer", kind, handover_id, constants.CONSUMER_GROUP,
    )


def position_group(client, stream_key, start_id):
    """Make the worker's group deliver the entries after `start_id` next."""
    try:
        client.xgroup_setid(stream_key, constants.CONSUMER_GROUP, start_id)
    except redis.ResponseError:
        client.xgroup_create(stream_key, constants.CONSUMER_GROUP, id=start_id, mkstream=True)


def acknowledge_pending_through(client, stream_key, last_id):
    """Acknowledge the group's pending entries up to `last_id`, which a gear applied."""
    acknowledged = 0
    for _ in range(MAX_PENDING_ROUNDS):
        try:
            pending = client.xpending_range(
                stream_key, constants.CONSUMER_GROUP, min="-", max=last_id, count=1000
            )
        except redis.ResponseError:
            return acknowledged  # no group
        if not pending:
            return acknowledged
        acknowledged += client.xack(
            stream_key, constants.CONSUMER_GROUP, *[entry["message_id"] for entry in pending]
        )
    logger.warning(
        "Stopped acknowledging pending entries of %s up to %s after %d rounds",
        stream_key, last_id, MAX_PENDING_ROUNDS,
    )
    return acknowledged


def hand_over_to_worker(client, settings, previous):
    """Make the built-in worker the owner, its group starting after what a gear applied.

    While the owner is "handover", neither a gear nor the worker counts.
    `previous` is the owner before the hand-over began, for the log.
    """
    stream_key = settings.stream_key
    client.set(keys.stream_owner(), constants.HANDOVER_OWNER)

    applied_id = client.get(keys.gears_applied_id())
    handover_id = client.get(keys.gears_handover_id())
    marks = [mark for mark in (applied_id, handover_id) if mark]
    if marks:
        start_id = max(marks, key=parse_id)
        position_group(client, stream_key, start_id)
        if applied_id:
            acknowledge_pending_through(client, stream_key, applied_id)
        client.delete(keys.gears_applied_id(), keys.gears_handover_id())
        logger.info(
            "Consumer group %s of %s starts after %s, the last entry a gear applied or the "
            "worker owned", constants.CONSUMER_GROUP, stream_key, start_id,
        )
    client.set(keys.stream_owner(), WORKER)
    logger.info(
        "Stream %s passes from %s to the built-in worker", stream_key, previous or "no consumer"
    )


# Registration ---------------------------------------------------------------


def register_library(client, settings):
    """Load the RedisGears 2 library unless the loaded one is current, and return the action taken."""
    source = library_source()
    config = versioned_config(source, settings, GEARS2)
    config_text = canonical_json(config)
    library = find_library(client)
    owner = client.get(keys.stream_owner())

    if owner == GEARS2 and library is not None:
        if _text(library.get("configuration")) == config_text:
            logger.info("RedisGears 2 library %s %s is registered and current",
                        constants.GEARS_LIBRARY_NAME, config["version"])
            return "unchanged"
        try:
            # REPLACE keeps the trigger's position in the stream.
            client.execute_command("TFUNCTION", "LOAD", "REPLACE", "CONFIG", config_text, source)
        except redis.ResponseError as error:
            # REPLACE cannot change the stream key of a trigger.
            logger.warning("Replacing library %s failed (%s); loading it anew",
                           constants.GEARS_LIBRARY_NAME, error)
            client.execute_command("TFUNCTION", "DELETE", constants.GEARS_LIBRARY_NAME)
            client.execute_command("TFUNCTION", "LOAD", "CONFIG", config_text, source)
        logger.info("Replaced RedisGears 2 library %s with version %s",
                    constants.GEARS_LIBRARY_NAME, config["version"])
        return "replaced"

    take_over_for_gear(client, settings, GEARS2)
    if library is not None:
        # A library loaded anew reads the stream from its first entry, which
        # the hand-over relies on; a replaced one would keep its position.
        client.execute_command("TFUNCTION", "DELETE", constants.GEARS_LIBRARY_NAME)
    client.execute_command("TFUNCTION", "LOAD", "CONFIG", config_text, source)
    logger.info("Registered RedisGears 2 library %s version %s on stream %s",
                constants.GEARS_LIBRARY_NAME, config["version"], settings.stream_key)
    return "registered"


def unregister_gear1(client, registrations):
    for registration in registrations:
        client.execute_command("RG.UNREGISTER", _text(registration["id"]))
        logger.info("Unregistered RedisGears 1.x gear %s (%s)",
                    _text(registration["id"]), _text(registration.get("desc")))


def destroy_reader_group(client, stream_key):
    """Delete the consumer group that the RedisGears 1.x StreamReader reads with."""
    if client.exists(stream_key):
        client.xgroup_destroy(stream_key, constants.GEARS1_READER_GROUP)


def register_gear1(client, settings):
    """Register the RedisGears 1.x gear unless the registered one is current, and return the action."""
    code, version = gear_code(settings)
    description = f"{constants.GEAR_DESCRIPTION_PREFIX} {version}"
    registrations = gear_registrations(client)
    owner = client.get(keys.stream_owner())

    if owner == GEARS1 and registrations:
        current = [r for r in registrations if _text(r.get("desc")) == description]
        if len(registrations) == 1 and current:
            logger.info("RedisGears 1.x gear %s is registered and current", version)
            return "unchanged"
        # The StreamReader's own group keeps its position, so the new gear
        # continues where the old one stopped.
        unregister_gear1(client, registrations)
        client.execute_command("RG.PYEXECUTE", code)
        logger.info("Replaced RedisGears 1.x gear with version %s", version)
        return "replaced"

    take_over_for_gear(client, settings, GEARS1)
    unregister_gear1(client, registrations)
    # Without its group, the StreamReader reads the stream from the first
    # entry, which the hand-over relies on.
    destroy_reader_group(client, settings.stream_key)
    client.execute_command("RG.PYEXECUTE", code)
    logger.info("Registered RedisGears 1.x gear version %s on stream %s",
                version, settings.stream_key)
    return "registered"


def register_gear(client, settings, kind):
    """Register the gear of `kind` under the lock, and return "registered", "replaced" or "unchanged"."""
    with registration_lock(client):
        try:
            if kind == GEARS2:
                return register_library(client, settings)
            if kind == GEARS1:
                return register_gear1(client, settings)
        except redis.ResponseError as error:
            raise RegistrationError(f"registering the {kind} stream consumer failed: {error}") from error
    raise ValueError(f"unknown gear kind {kind!r}")


def claim_stream_for_worker(client, settings):
    """Make the built-in worker the owner of the stream.

    Raises:
        RegistrationError: a gear of this service is registered on the
            server. Two consumers must not count one stream, and removing
            the gear here would let a process with a stale setting undo the
            choice of the others, so the switch is a deliberate step.
    """
    with registration_lock(client):
        kind = available_gears(client)
        if kind and gear_registered(client, kind):
            raise RegistrationError(
                f"the {kind} RedisGears consumer of this service is registered on the server "
                f"and counts {settings.stream_key}, so a worker next to it would count events "
                "twice. Use STREAM_CONSUMER=auto, or run `python setup.py --switch-to-worker` "
                "to unregister the gear and hand the stream to the worker."
            )
        owner = client.get(keys.stream_owner())
        if owner != WORKER:
            hand_over_to_worker(client, settings, owner)


def unregister_gears(client, settings):
    """Remove every registration of the service's gears from the server."""
    kind = available_gears(client)
    if kind == GEARS2 and find_library(client) is not None:
        client.execute_command("TFUNCTION", "DELETE", constants.GEARS_LIBRARY_NAME)
        logger.info("Deleted RedisGears 2 library %s", constants.GEARS_LIBRARY_NAME)
    elif kind == GEARS1:
        unregister_gear1(client, gear_registrations(client))
        destroy_reader_group(client, settings.stream_key)


def switch_to_worker(client, settings):
    """Unregister the gears and hand the stream to the built-in worker."""
    with registration_lock(client):
        # Stop the gear from counting before it is unregistered, so the
        # applied id no longer moves while the worker's group is positioned.
        previous = client.get(keys.stream_owner())
        client.set(keys.stream_owner(), constants.HANDOVER_OWNER)
        try:
            unregister_gears(client, settings)
        except redis.ResponseError as error:
            raise RegistrationError(f"unregistering the RedisGears consumer failed: {error}") from error
        hand_over_to_worker(client, settings, previous)


# Status ---------------------------------------------------------------------


def gear_status(client, kind):
    """Return what the readiness check reports about the gear of `kind`."""
    failures = client.get(keys.gears_failures())
    last_errors = client.xrevrange(keys.gears_errors(), count=1)
    return {
        "stream_owner": client.get(keys.stream_owner()),
        "gear_registered": gear_registered(client, kind),
        "gear_failures": int(failures or 0),
        "gear_last_error": last_errors[0][1] if last_errors else None,
    }
