"""realfake.core.workers: a worker dies with its stage, through Linux's parent-death signal or,
where that is not available, through the thread that watches the parent."""

import sys
from pathlib import Path

import pytest
from conftest import kill_stage_leaving_workers

ROOT = Path(__file__).resolve().parent.parent

# A stand-in stage: it forks one worker that prepares itself as the pools' workers do, then both
# wait far longer than the test.
STAGE = """
import os, sys, time
from realfake.core import workers
if os.fork() == 0:
    if sys.argv[1] == "watching thread":
        workers.sys.platform = "elsewhere"  # as on a system without prctl
    workers.prepare_worker(os.getppid())
    time.sleep(60)
    os._exit(0)
time.sleep(60)
"""


@pytest.mark.parametrize("mechanism", ["parent-death signal", "watching thread"])
def test_worker_ends_within_seconds_of_its_stage_being_killed(mechanism):
    command = [sys.executable, "-c", STAGE, mechanism]
    assert kill_stage_leaving_workers(command, ROOT, workers=1) == set()
