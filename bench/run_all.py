"""Run every benchmark in turn and print their tables and a summary of the targets.

    python -m bench [--quick] [--only NAME ...]

Each benchmark starts its own Redis Stack server and service processes on
127.0.0.1 and stops them before the next one starts. The figures depend on
the machine and on whatever else runs on it, so the machine and its load
average are printed before and after.
"""

import argparse
import time
import traceback

from bench import (
    batch_endpoint,
    click_endpoint,
    harness,
    memory,
    redis_commands,
    stream_consumer,
    talkingdata_replay,
)

BENCHMARKS = {
    "click_endpoint": click_endpoint,
    "redis_commands": redis_commands,
    "batch_endpoint": batch_endpoint,
    "stream_consumer": stream_consumer,
    "memory": memory,
    "talkingdata_replay": talkingdata_replay,
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true",
        help="shorter runs and smaller data sets: about 3 minutes in all instead of about 25",
    )
    parser.add_argument(
        "--only", nargs="+", choices=sorted(BENCHMARKS), metavar="NAME",
        help=f"run only these benchmarks: {', '.join(BENCHMARKS)}",
    )
    return parser.parse_args(argv)


def main(argv=None):
    """Run the benchmarks and return 1 when one of them could not run, else 0."""
    args = parse_args(argv)
    names = args.only or list(BENCHMARKS)
    harness.print_machine()
    outcomes = {}
    for name in names:
        print(f"\n## {name}", flush=True)
        started = time.monotonic()
        try:
            result = BENCHMARKS[name].run(quick=args.quick)
            outcomes[name] = result.get("target_met", "no target")
        except harness.BenchError as error:
            print(f"{name} could not run: {error}")
            outcomes[name] = "failed to run"
        except Exception:  # report the others' figures even when one benchmark breaks
            traceback.print_exc()
            outcomes[name] = "failed to run"
        print(f"({name} took {time.monotonic() - started:.0f} s)", flush=True)

    print("\n## Summary")
    for name, outcome in outcomes.items():
        print(f"{name}: target met: {outcome}")
    harness.print_machine()
    return 1 if "failed to run" in outcomes.values() else 0


if __name__ == "__main__":
    raise SystemExit(main())
