"""The garbage collector paused for a bounded piece of batch work, across the sweep's lanes."""
import gc
import threading
import weakref

from app.heap import collector_paused


def test_the_collector_runs_again_only_when_the_last_overlapping_pause_ends():
    assert gc.isenabled()
    first_in, second_done = threading.Event(), threading.Event()
    seen = {}

    def lane():
        with collector_paused():
            first_in.set()
            second_done.wait(10)
            seen["lane, after the other pause ended"] = gc.isenabled()

    other = threading.Thread(target=lane)
    other.start()
    first_in.wait(10)
    with collector_paused():
        seen["both paused"] = gc.isenabled()
    second_done.set()
    other.join(10)
    assert seen == {"both paused": False, "lane, after the other pause ended": False}
    assert gc.isenabled()


def test_a_pause_leaves_a_collector_someone_else_turned_off_turned_off():
    gc.disable()
    try:
        with collector_paused():
            with collector_paused():
                assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_an_error_in_the_batch_still_ends_the_pause():
    try:
        with collector_paused():
            raise ValueError("the batch failed")
    except ValueError:
        pass
    assert gc.isenabled()


def test_a_pause_that_ends_while_another_goes_on_collects_its_cycles_at_once():
    class Cycle:
        pass

    with collector_paused():
        with collector_paused():
            made = Cycle()
            made.me = made
            ref = weakref.ref(made)
            del made
        # Still paused for the outer batch, yet the inner one's cycle is gone.
        assert ref() is None and not gc.isenabled()
    assert gc.isenabled()
