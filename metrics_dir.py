"""The folder where gunicorn workers keep their Prometheus metrics.

In prometheus_client's multiprocess mode each worker writes its counters to
files in `PROMETHEUS_MULTIPROC_DIR`, and a scrape adds up the files of all
workers. The gunicorn master prepares the folder before any worker starts
(see `gunicorn.conf.py`). This module imports prometheus_client only inside
functions, because prometheus_client reads the variable when it is imported.
"""

import glob
import os
import shutil
import tempfile

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
TEMPORARY_PREFIX = "fraud-detector-metrics-"


def prepare(environ=os.environ):
    """Create or empty the metrics folder and set PROMETHEUS_MULTIPROC_DIR in `environ`.

    When the variable is set, the folder is created if missing and the files
    of an earlier run are deleted, so counters start from zero. When it is
    unset, a new temporary folder is created.

    Returns:
        (folder, temporary): `temporary` is True when this call created a
        temporary folder, which the caller removes with `remove` at exit.
    """
    folder = environ.get(VARIABLE)
    if not folder:
        folder = tempfile.mkdtemp(prefix=TEMPORARY_PREFIX)
        environ[VARIABLE] = folder
        return folder, True

    os.makedirs(folder, exist_ok=True)
    for path in glob.glob(os.path.join(folder, "*.db")):
        os.remove(path)
    return folder, False


def mark_worker_dead(pid):
    """Delete the live-gauge files of a worker that exited.

    Counter and histogram files stay, so the totals keep what the dead worker
    counted.
    """
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)


def remove(folder):
    shutil.rmtree(folder, ignore_errors=True)
