"""A forked child of a training process (a multiprocessing pool's worker, forked while the loop's
graceful SIGTERM handler is installed) must still die on SIGTERM: a pool's terminate() sends it
and then waits for the worker. Found as a hung test run: an idle worker kept waiting on its queue
after SIGTERM, because the inherited handler only asked the (parent's) loop to stop."""

from __future__ import annotations

import os
import signal
import time

from forgetless.train.runtime import stop_on_sigterm


def test_a_forked_child_dies_on_sigterm_while_the_parent_stops_gracefully() -> None:
    term = {"asked": False}
    previous = stop_on_sigterm(term, graceful=True)
    try:
        pid = os.fork()
        if pid == 0:  # the child idles, as a pool worker waiting for work does
            while True:
                time.sleep(0.05)
        time.sleep(0.2)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        status = None
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError("the forked child ignored SIGTERM")
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
        # The parent itself still stops gracefully: the first SIGTERM only asks.
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        assert term["asked"]
    finally:
        signal.signal(signal.SIGTERM, previous)
