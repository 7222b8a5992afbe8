"""Steward's helper for `python` steps that declare `dask:`.

Steward starts a Dask scheduler and workers for the step, as the submitting user, speaking TLS with
certificates made for this job only. `client()` returns a `dask.distributed.Client` connected to them with
the job's client certificate; nothing else can connect.
"""

import os

__all__ = ["client", "security", "scheduler_address"]


def scheduler_address():
    """The job's scheduler, `tls://HOST:PORT` (also in STEWARD_DASK_SCHEDULER)."""
    return _required("STEWARD_DASK_SCHEDULER")


def security():
    """A `distributed.security.Security` holding the job's CA and client certificate; TLS is required."""
    from distributed.security import Security

    return Security(
        tls_ca_file=_required("STEWARD_DASK_CA_FILE"),
        tls_client_cert=_required("STEWARD_DASK_CLIENT_CERT"),
        tls_client_key=_required("STEWARD_DASK_CLIENT_KEY"),
        require_encryption=True,
    )


def client(**kwargs):
    """A `dask.distributed.Client` connected to the job's cluster. Keyword arguments go to `Client`."""
    from distributed import Client

    return Client(scheduler_address(), security=security(), **kwargs)


def _required(name):
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(
            f"{name} is not set: steward_dask works in a python step that declares `dask:`"
        )
    return value
