"""Jobs that the worker tests queue on a real `flask worker`: they note what the worker
process shows them in Redis (a list the test reads), so the test sees what one job leaves for
the next, and which process ran a job."""
from __future__ import annotations

import os
import time

from flask import current_app, g

from app.extensions import db


def _note(key: str, value: str) -> None:
    from app.jobs import redis_connection

    redis_connection().rpush(key, value)


def leave_state_behind(key: str) -> None:
    """Leave something in the database session and in `g`, as a careless job might."""
    db.session.info["left_by_an_earlier_job"] = True
    g.left_by_an_earlier_job = True
    _note(key, "left")


def report_state(key: str) -> None:
    """Note whether this job sees what an earlier job left."""
    seen = ("left_by_an_earlier_job" in db.session.info
            or hasattr(g, "left_by_an_earlier_job"))
    _note(key, "seen" if seen else "clean")


def sleep_noting(key: str, seconds: float) -> None:
    """Note the process that runs it, then sleep (a job that hangs, or a long one)."""
    _note(key, str(os.getpid()))
    time.sleep(seconds)
    _note(key, f"done {os.getpid()} {current_app.config['RQ_QUEUE']}")
