"""gunicorn server hooks of ``chatport serve`` (``--config <this file>``): gunicorn runs this file
in its master, which imports nothing of chatport itself."""


def child_exit(server, worker):
    """A worker is gone: drop its live gauges from the metrics (its counters stay counted)."""
    import os

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
