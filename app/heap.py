"""The garbage collector in long-running processes: the start-up objects set aside, and the
collector paused while a worker decides a bounded batch."""
from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager


def settle_start_up_objects() -> None:
    """Once the app is built (its modules, the ORM's mappers, the compiled templates and
    rules), move every object there is into the collector's permanent generation: none of it
    is garbage, and no full collection walks it again. Cyclic garbage made before this point
    is collected first, so none of it is kept for good."""
    gc.collect()
    gc.freeze()


_pause_lock = threading.Lock()
_pauses = 0
_was_enabled = True


@contextmanager
def collector_paused() -> Iterator[None]:
    """Run a bounded piece of batch work (one policy batch: at most POLICY_SWEEP_BATCH items)
    without the cyclic garbage collector. A batch makes tens of thousands of objects that live
    until its commit; the collector, set off by their number, walked them again and again
    (15-20% of the policy worker's time, bench/README.md). Nearly all of them are freed by
    their reference counts when the batch ends; the few cycles wait for the collector's next
    run, after the batch. Pauses nest and overlap across threads (the sweep's lanes): the
    collector runs again when the last one ends, and a pause that ends while another goes on
    collects its cycles from the young generations at once (so lanes that take turns never keep
    the collector away for a whole sweep, and its garbage with it)."""
    global _pauses, _was_enabled
    with _pause_lock:
        if _pauses == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            others_paused = _pauses > 0
            if not others_paused and _was_enabled:
                gc.enable()
        if others_paused and _was_enabled:
            gc.collect(1)
