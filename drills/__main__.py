"""`python -m drills [--short] [r1 r3 …]`: run the drills against DATABASE_URL (PostgreSQL,
migrated, empty: each drill empties it first), print their figures, exit 1 if an invariant
broke. Logs of the processes a drill started go to a folder per drill under --logs (a
temporary folder by default); the last lines of a failed drill's logs are printed."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from drills import (r1_decisions, r2_kill9, r3_redis, r9_mixed_load, r10_postgres_restart,
                    signin_race)

DRILLS = {"r1": r1_decisions.run, "r2": r2_kill9.run, "r3": r3_redis.run,
          "r9": r9_mixed_load.run, "r10": r10_postgres_restart.run, "signin": signin_race.run}


def _empty_database() -> None:
    from sqlalchemy import text

    from app.extensions import db
    from drills.common import make_app

    app = make_app()
    with app.app_context():
        tables = [t.name for t in reversed(db.metadata.sorted_tables)]
        with db.engine.begin() as conn:
            # The audit tables refuse TRUNCATE through their triggers: replica mode skips them
            # for this transaction (the drill's own database, as its superuser).
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        db.engine.dispose()


def _print_tails(folder: Path, lines: int = 30) -> None:
    """The last lines of each process log of a drill that failed (the folder itself may be
    gone when the caller's temporary directory is cleaned up)."""
    for log in sorted(folder.glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        print(f"\n-- {log.name} (last {len(tail)} lines)", flush=True)
        print("\n".join(tail), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m drills")
    parser.add_argument("names", nargs="*", help=f"drills to run: {', '.join(DRILLS)} "
                                                 "(default: all)")
    parser.add_argument("--short", action="store_true", help="the ~2 minute form")
    parser.add_argument("--logs", type=Path, default=None)
    args = parser.parse_args()
    unknown = [n for n in args.names if n not in DRILLS]
    if unknown:
        parser.error(f"unknown drill {', '.join(unknown)}; choose from {', '.join(DRILLS)}")
    if not os.environ.get("DATABASE_URL", "").startswith("postgresql"):
        print("The drills run on PostgreSQL: set DATABASE_URL (make drill does).", file=sys.stderr)
        return 2
    logs = args.logs or Path(tempfile.mkdtemp(prefix="cleardesk-drill-"))
    logs.mkdir(parents=True, exist_ok=True)
    failed = []
    started = time.monotonic()
    for name in args.names or list(DRILLS):
        _empty_database()
        folder = logs / name  # each drill's process logs apart, so a failure shows its own
        folder.mkdir(parents=True, exist_ok=True)
        result = DRILLS[name](folder, args.short)
        result.print()
        if result.broken:
            failed.append(name)
            _print_tails(folder)
    print(f"\n{len(args.names or DRILLS) - len(failed)} drills held, {len(failed)} failed "
          f"in {time.monotonic() - started:.0f}s; process logs in {logs}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
