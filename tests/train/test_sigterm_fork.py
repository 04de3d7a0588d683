"""A forked child of a training process (a multiprocessing pool's worker, forked while the loop's
graceful SIGTERM handler is installed) must still die on SIGTERM: a pool's terminate() sends it
and then waits for the worker. Found as a hung test run: an idle worker kept waiting on its queue
after SIGTERM, because the inherited handler only asked the (parent's) loop to stop."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

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


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_tokenizer_pool_workers_keep_the_default_sigterm() -> None:
    # A worker forked from a multi-threaded process can deadlock in C before any Python handler
    # runs: only SIGTERM's default action then lets the pool's terminate() end it. So the workers
    # are forked with SIGTERM at its default even while a training loop catches it.
    import multiprocessing

    from tokenizers import Tokenizer, models

    from forgetless.data.encode import _runner

    tokenizer = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")).to_str()
    term = {"asked": False}
    previous = stop_on_sigterm(term, graceful=True)
    try:
        with _runner(2, tokenizer):
            workers = multiprocessing.active_children()
            assert workers
            for w in workers:
                caught = next(line for line in Path(f"/proc/{w.pid}/status").read_text().splitlines()
                              if line.startswith("SigCgt:"))
                assert not int(caught.split()[1], 16) & (1 << (signal.SIGTERM - 1)), w.pid
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # the loop's handler is back
    finally:
        signal.signal(signal.SIGTERM, previous)
