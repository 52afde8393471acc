"""Flask CLI groups `blacklist` and `allowlist`: `flask --app app blacklist --help`."""

import datetime
import sys

import click
from flask import current_app
from flask.cli import AppGroup

import constants
from ip_lists.entries import parse_address, parse_entry
from ip_lists.importer import import_blocklist
from ip_lists.records import NEVER
from ip_lists.store import FILTER_FULL, IpList
from validation import InvalidField

MAX_SHOWN_ERRORS = 20  # bad import lines printed, while the summary counts all of them


def open_list(list_name):
    """Return the `IpList` of the app's Redis, or stop when only the embedded server exists."""
    service = current_app.extensions["fraud_detector"]
    if service.embedded is not None:
        raise click.ClickException(
            "No Redis is configured, so this command would change a throw-away embedded "
            "server. Set REDIS_URL (or REDIS_HOST and REDIS_PORT) to the service's Redis."
        )
    return IpList(service.client, list_name, service.settings)


def parse_or_fail(text, parse=parse_entry):
    try:
        return parse(text, "entry")
    except InvalidField as error:
        raise click.BadParameter(error.message) from None


def check_reason(context, parameter, value):
    if value is not None and (len(value) > constants.MAX_REASON_LENGTH or not value.isprintable()):
        raise click.BadParameter(
            f"must be at most {constants.MAX_REASON_LENGTH} printable characters, without line breaks"
        )
    return value


def expires_at_from(ip_list, seconds):
    return NEVER if seconds is None else ip_list.now_ms() + seconds * 1000


def format_ms(ms):
    if not ms:
        return "never"
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def format_record(record, now_ms):
    expiry = format_ms(record.expires_at)
    if record.expired(now_ms):
        expiry += " (expired)"
    return f"{record.entry}\texpires {expiry}\tadded {format_ms(record.added_at)}\t{record.reason}"


expires_option = click.option(
    "--expires-in", type=click.IntRange(min=1), metavar="SECONDS",
    help="Seconds from now until the entries expire. Without it they never expire.",
)
reason_option = click.option(
    "--reason", default="", callback=check_reason,
    help=f"Reason stored with new entries, at most {constants.MAX_REASON_LENGTH} characters.",
)


def make_group(list_name):
    """Return the CLI group of one list."""
    group = AppGroup(list_name, help=f"Manage the {list_name} of addresses and CIDR ranges.")

    @group.command("add")
    @click.argument("entries", nargs=-1, required=True)
    @expires_option
    @reason_option
    def add(entries, expires_in, reason):
        """Add addresses or CIDR ranges, or extend the expiry of present ones."""
        parsed = [parse_or_fail(text) for text in entries]
        target = open_list(list_name)
        statuses = target.add(parsed, expires_at_from(target, expires_in), reason)
        for entry, status in zip(parsed, statuses):
            if status == FILTER_FULL:
                click.echo(f"{entry.text}: added, but the Cuckoo filter {constants.FILTER_KEY} is "
                           "full, so only its record blacklists it", err=True)
            else:
                click.echo(f"{entry.text}: {status}")

    @group.command("remove")
    @click.argument("entries", nargs=-1, required=True)
    def remove(entries):
        """Remove entries, keeping the entries that overlap them."""
        parsed = [parse_or_fail(text) for text in entries]
        statuses = open_list(list_name).remove(parsed)
        for entry, status in zip(parsed, statuses):
            click.echo(f"{entry.text}: {status.replace('_', ' ')}")
        if "not_found" in statuses:
            raise SystemExit(1)

    @group.command("get")
    @click.argument("entry")
    def get(entry):
        """Show the record of one entry."""
        parsed = parse_or_fail(entry)
        target = open_list(list_name)
        record = target.get(parsed)
        if record is None:
            raise click.ClickException(f"{parsed.text} is not an entry of the {list_name}")
        click.echo(format_record(record, target.now_ms()))

    @group.command("lookup")
    @click.argument("ip")
    def lookup(ip):
        """Show the entries that match an address: its own and every range that contains it."""
        address = parse_or_fail(ip, parse_address)
        target = open_list(list_name)
        now_ms = target.now_ms()
        records = target.matches(address)
        if not records:
            click.echo(f"{address.text} matches no entry of the {list_name}")
        for record in records:
            click.echo(format_record(record, now_ms))

    @group.command("list")
    @click.option("--after", help="Start after this entry (the last one of the previous page).")
    @click.option("--limit", type=click.IntRange(1, constants.MAX_ADMIN_LIST_LIMIT),
                  default=constants.ADMIN_LIST_LIMIT, show_default=True, help="Entries per page.")
    def list_entries(after, limit):
        """List entries in address order, one page at a time."""
        target = open_list(list_name)
        records, next_after = target.page(parse_or_fail(after) if after else None, limit)
        now_ms = target.now_ms()
        for record in records:
            click.echo(format_record(record, now_ms))
        if next_after:
            click.echo(f"More entries: add --after {next_after}", err=True)

    @group.command("import")
    @click.argument("path", type=click.Path(exists=True, dir_okay=False))
    @expires_option
    @click.option("--reason", default=None, callback=check_reason,
                  help="Reason stored with new entries (default: the file name).")
    def import_file(path, expires_in, reason):
        """Import a FireHOL netset or a file of one address or range per line."""
        # An undecodable byte makes its line invalid instead of stopping the import.
        with open(path, encoding="utf-8", errors="replace") as source:
            lines = source.read().splitlines()
        target = open_list(list_name)
        if reason is None:
            reason = f"imported from {path}"[:constants.MAX_REASON_LENGTH]

        with click.progressbar(length=len(lines), label=f"Importing into the {list_name}",
                               file=sys.stderr) as bar:
            summary = import_blocklist(target, lines, expires_at_from(target, expires_in), reason,
                                       progress=bar.update)

        for error in summary.errors[:MAX_SHOWN_ERRORS]:
            click.echo(f"line {error['line']}: {error['message']}", err=True)
        if summary.invalid > MAX_SHOWN_ERRORS:
            click.echo(f"... and {summary.invalid - MAX_SHOWN_ERRORS} more invalid lines", err=True)
        click.echo(f"{path}: {summary.added} added, {summary.already_present} already present, "
                   f"{summary.invalid} invalid, in {summary.seconds:.2f} s")
        if summary.filter_full:
            click.echo(f"{summary.filter_full} addresses did not fit into the full Cuckoo filter "
                       f"{constants.FILTER_KEY}, but their records still blacklist them", err=True)

    @group.command("sweep")
    def sweep():
        """Remove expired entries and rebuild the range index."""
        click.echo(f"Removed {open_list(list_name).sweep()} expired entries from the {list_name}")

    @group.command("status")
    def status():
        """Show the sizes of the list and, for the blacklist, of the Cuckoo filter."""
        report = open_list(list_name).status()
        for name, value in report.items():
            if isinstance(value, dict):
                for sub_name, sub_value in value.items():
                    click.echo(f"{name}.{sub_name}: {sub_value}")
            else:
                click.echo(f"{name}: {value}")

    return group


blacklist_cli = make_group(constants.BLACKLIST)
allowlist_cli = make_group(constants.ALLOWLIST)
