"""`flask worker` as it runs by default (WORKER_CLASS=simple: every job in the worker's own
process), as real processes on a real Redis: nothing of one job is left for the next, a job
that hangs is stopped by its queue's timeout and the worker goes on, and a job whose worker is
killed with SIGKILL mid-job is taken over by a sibling within a minute, not after its timeout."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from rq.job import Job

from app.jobs import DEFAULT_RETRY, JOB_TIMEOUTS, URGENT, job_queue, redis_connection, \
    worker_queues
from tests.approvals.conftest import ROOT

JOBS = "tests.outbox.worker_jobs"


def _start_worker(app, queues: str = "urgent,sweeps,default", **env) -> subprocess.Popen:
    config = app.config
    return subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "wsgi", "worker", "--queues", queues],
        cwd=ROOT, env=dict(os.environ, DATABASE_URL=config["SQLALCHEMY_DATABASE_URI"],
                           REDIS_URL=config["REDIS_URL"], RQ_QUEUE=config["RQ_QUEUE"],
                           SECRET_KEY=config["SECRET_KEY"], **env),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _kill(worker: subprocess.Popen) -> None:
    try:
        os.killpg(worker.pid, signal.SIGKILL)  # the worker and its scheduler
    except ProcessLookupError:
        pass
    worker.wait(30)


@pytest.fixture
def workers(app):
    started: list[subprocess.Popen] = []
    yield started
    for worker in started:
        _kill(worker)
    for queue in worker_queues():
        queue.empty()


def _notes(key: str, count: int, seconds: float) -> list[str]:
    """The first `count` notes the jobs made under `key`, waiting up to `seconds` for them."""
    deadline = time.monotonic() + seconds
    while True:
        notes = [n.decode() for n in redis_connection().lrange(key, 0, -1)]
        if len(notes) >= count or time.monotonic() > deadline:
            return notes
        time.sleep(0.2)


def test_the_worker_runs_jobs_in_its_own_process_by_default_and_leaves_nothing_for_the_next(
        app, workers):
    key = f"notes-{uuid.uuid4().hex}"
    queue = job_queue(URGENT)
    queue.enqueue(f"{JOBS}.leave_state_behind", key)
    queue.enqueue(f"{JOBS}.report_state", key)
    queue.enqueue(f"{JOBS}.sleep_noting", key, 0)
    workers.append(_start_worker(app, queues="urgent"))
    notes = _notes(key, 4, 60)
    assert notes[:2] == ["left", "clean"]  # the session and `g` of the first job are gone
    assert notes[2] == str(workers[0].pid)  # run by the worker process itself, no fork


def test_queues_give_their_jobs_short_timeouts_and_imports_long_ones(app):
    assert JOB_TIMEOUTS[URGENT] <= 120 and JOB_TIMEOUTS["default"] <= 120
    assert JOB_TIMEOUTS["bulk"] >= 1800
    job = job_queue(URGENT).enqueue(f"{JOBS}.report_state", "unused")
    assert job.timeout == JOB_TIMEOUTS[URGENT]
    job.cancel()
    # A webhook batch fits its queue's timeout with room for its last request.
    config = app.config
    assert (config["WEBHOOK_BATCH_SECONDS"] + config["WEBHOOK_TIMEOUT_SECONDS"]
            < JOB_TIMEOUTS["default"])


def test_a_job_that_hangs_is_stopped_by_its_timeout_and_the_worker_takes_the_next(
        app, workers):
    key = f"notes-{uuid.uuid4().hex}"
    queue = job_queue(URGENT)
    hung = queue.enqueue(f"{JOBS}.sleep_noting", key, 300, job_timeout=2)
    queue.enqueue(f"{JOBS}.report_state", key)
    workers.append(_start_worker(app, queues="urgent"))
    notes = _notes(key, 2, 60)
    assert notes == [str(workers[0].pid), "clean"]  # stopped, never "done"; then the next
    hung = Job.fetch(hung.id, connection=redis_connection())
    assert hung.get_status() == "failed"
    assert "JobTimeoutException" in (hung.latest_result().exc_string or "")
    assert workers[0].poll() is None  # the same worker, still running


def test_a_job_whose_worker_is_killed_mid_job_runs_again_on_a_sibling_within_a_minute(
        app, workers):
    key = f"notes-{uuid.uuid4().hex}"
    workers.extend(_start_worker(app) for _ in range(2))
    job_queue(URGENT).enqueue(f"{JOBS}.sleep_noting", key, 15, retry=DEFAULT_RETRY)
    first = _notes(key, 1, 60)
    assert first, "no worker took the job"
    running = next(w for w in workers if str(w.pid) == first[0])
    _kill(running)
    killed = time.monotonic()
    taken_over = _notes(key, 2, 90)
    waited = time.monotonic() - killed
    sibling = next(w for w in workers if w is not running)
    assert taken_over[1:] == [str(sibling.pid)], taken_over
    # Its heartbeat lapses (25 s), the sibling's maintenance finds it (every 15 s) and queues
    # it again at once: well under RQ's own four minutes (the job's timeout plus a minute).
    assert waited < 60, f"taken over after {waited:.0f}s"
    assert _notes(key, 3, 40)[2:] == [f"done {sibling.pid} {app.config['RQ_QUEUE']}"]
