"""Worker preload: the worker exits when the Steward executor that started it is gone."""

from .watchdog import watch_parent


def dask_setup(worker):
    watch_parent()
