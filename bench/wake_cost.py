"""What waking up costs this machine: the CPU of a fixed piece of work done back to back, and done after each of
a series of short sleeps, as a process that sends at Slack's pace does it (idle between messages).

The briefing's CPU per account (bench/briefing_run.py) is measured with getrusage, which counts what the kernel
charges the process: on some machines (virtual ones especially) each sleep and wake-up is charged CPU of its
own, and work done right after one runs with cold caches. This shows how much, so that the briefing's figure can
be read: the same work costs more at Slack's pace (about 20 messages a second) than in one busy burst.

    python bench/wake_cost.py [--units N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

GAPS_MS = (0.0, 1.0, 5.0, 20.0, 50.0)


def work() -> None:
    """A fixed piece of pure-Python work, about a few hundred microseconds: JSON in and out."""
    document = {"blocks": [{"type": "section", "text": "x" * 200, "n": n} for n in range(20)]}
    for _ in range(10):
        json.loads(json.dumps(document))


def cpu_per_unit(units: int, gap_s: float) -> float:
    """CPU seconds per piece of work, each followed by a sleep of `gap_s` (none: back to back)."""
    started = time.process_time()
    for _ in range(units):
        work()
        if gap_s:
            time.sleep(gap_s)
    return (time.process_time() - started) / units


def sleep_cost(sleeps: int, gap_s: float) -> float:
    """CPU seconds charged per sleep of `gap_s` with no work at all."""
    started = time.process_time()
    for _ in range(sleeps):
        time.sleep(gap_s)
    return (time.process_time() - started) / sleeps


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--units", type=int, default=300, help="pieces of work per gap (300)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON to PATH")
    args = parser.parse_args(argv)
    if args.units < 1:
        parser.error("--units: at least 1")
    back_to_back = cpu_per_unit(args.units, 0.0)
    rows = []
    for gap_ms in GAPS_MS:
        seconds = back_to_back if gap_ms == 0 else cpu_per_unit(args.units, gap_ms / 1000)
        rows.append(
            {"gap_ms": gap_ms, "cpu_us": round(seconds * 1e6, 1), "ratio": round(seconds / back_to_back, 2)}
        )
    idle = sleep_cost(args.units, 0.02)
    print("CPU of one piece of work, done after a sleep of:")
    for row in rows:
        print(f"  {row['gap_ms']:5.1f} ms   {row['cpu_us']:8.1f} µs   {row['ratio']:.2f}× back to back")
    print(f"a 20 ms sleep with no work is charged {idle * 1e6:.1f} µs of CPU")
    if args.json is not None:
        args.json.write_text(
            json.dumps({"work": rows, "sleep_20ms_cpu_us": round(idle * 1e6, 1)}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
