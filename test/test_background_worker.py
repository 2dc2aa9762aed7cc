"""node_support.BackgroundWorker: the thread model inference runs in beside a node's executor."""
import threading

from ros_harness import wait_for
from sim2real_vla_ros.nodes.node_support import BackgroundWorker


def test_each_wake_runs_the_job_in_the_worker_thread():
    threads = []
    worker = BackgroundWorker("test_worker", lambda: threads.append(threading.current_thread().name), print)
    try:
        worker.wake()
        wait_for(lambda: worker.runs == 1, 5.0, "the first run")
        worker.wake()
        wait_for(lambda: worker.runs == 2, 5.0, "the second run")
        assert threads == ["test_worker", "test_worker"]
    finally:
        assert worker.stop()


def test_wakes_during_a_run_coalesce_into_one_more_run():
    release = threading.Event()
    started = threading.Event()

    def job():
        started.set()
        release.wait(5.0)

    worker = BackgroundWorker("test_worker", job, print)
    try:
        worker.wake()
        assert started.wait(5.0)
        for _ in range(5):
            worker.wake()  # never blocks while the job runs
        assert worker.runs == 0
        release.set()
        wait_for(lambda: worker.runs == 2, 5.0, "the run in progress and one coalesced run")
        worker.wake()
        wait_for(lambda: worker.runs == 3, 5.0, "a later wake")
    finally:
        release.set()
        assert worker.stop()


def test_a_failing_job_is_reported_and_the_worker_keeps_serving():
    errors = []
    calls = []

    def job():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("model exploded")

    worker = BackgroundWorker("test_worker", job, errors.append)
    try:
        worker.wake()
        wait_for(lambda: worker.runs == 1, 5.0, "the failing run")
        worker.wake()
        wait_for(lambda: worker.runs == 2, 5.0, "the next run")
        assert [str(e) for e in errors] == ["model exploded"]
    finally:
        assert worker.stop()


def test_stop_ends_the_thread_without_running_the_job_again():
    calls = []
    worker = BackgroundWorker("test_worker", lambda: calls.append(1), print)
    assert worker.stop(timeout_s=5.0)
    worker.wake()
    assert calls == [] and worker.runs == 0
