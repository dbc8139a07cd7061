"""Worker processes that end when the stage that started them ends, also after kill -9."""

import ctypes
import os
import signal
import sys
import threading
import time

# From <linux/prctl.h>: deliver a signal to this process when its parent dies.
_PR_SET_PDEATHSIG = 1
_POLL_SECONDS = 0.5


def prepare_worker(parent_pid: int) -> None:
    """A pool initializer: the worker leaves Ctrl-C to its parent, which stops the pool and
    reports the interruption in one line, and dies with the parent `parent_pid`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with_parent(parent_pid)


def exit_with_parent(parent_pid: int) -> None:
    """Make this worker die as soon as its parent `parent_pid` does.

    A killed stage cannot shut its pool down, and its workers, each holding both ends of the
    pool's queues, would otherwise wait for work forever. Linux kills them itself once asked with
    prctl(PR_SET_PDEATHSIG); elsewhere a thread polls the parent's process id.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            asked = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            asked = False
        if asked:
            if os.getppid() != parent_pid:  # died before the request: no signal will come
                os._exit(1)
            return
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(_POLL_SECONDS)
    os._exit(1)
