"""Ends this Dask process when the Steward executor that started it is gone.

Steward stops a step's Dask processes itself (TERM, then KILL of each process group). This is the fallback
for an executor that died without doing so: the process's parent changes, and it exits instead of running
on as an orphan.
"""

import os
import threading
import time

_EXIT_CODE = 70


def watch_parent(interval=1.0):
    parent = os.getppid()

    def check():
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(_EXIT_CODE)

    threading.Thread(target=check, name="steward-parent-watch", daemon=True).start()
