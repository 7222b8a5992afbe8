"""Scheduler preload: reports workers joining and leaving to Steward, and watches the executor.

Each event is one JSON line appended to the file named by STEWARD_DASK_EVENTS, which Steward reads to know
when the step's workers have registered (and which pid each has).
"""

import json
import os
import time

from distributed.diagnostics.plugin import SchedulerPlugin

from .watchdog import watch_parent


class StewardEvents(SchedulerPlugin):
    name = "steward-events"

    def __init__(self, path):
        self._file = open(path, "a", buffering=1, encoding="utf-8")

    def _write(self, **event):
        event["time"] = time.time()
        self._file.write(json.dumps(event) + "\n")

    def add_worker(self, scheduler=None, worker=None, **kwargs):
        state = scheduler.workers.get(worker) if scheduler is not None else None
        self._write(
            event="worker-added",
            address=worker,
            name=None if state is None else str(state.name),
            pid=None if state is None else state.pid,
        )

    def remove_worker(self, scheduler=None, worker=None, **kwargs):
        self._write(event="worker-removed", address=worker)


def dask_setup(scheduler):
    watch_parent()
    path = os.environ.get("STEWARD_DASK_EVENTS")
    if path:
        scheduler.add_plugin(StewardEvents(path))
