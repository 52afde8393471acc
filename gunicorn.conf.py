"""Production gunicorn settings: `gunicorn -c gunicorn.conf.py app:app`.

Every value can be overridden by the usual GUNICORN_CMD_ARGS or command-line
flags. With no Redis configured, the master process starts the embedded
server and its consumer, and every worker connects to it. The master also
prepares PROMETHEUS_MULTIPROC_DIR, where the workers keep their metrics
(see docs/observability.md).
"""

import multiprocessing
import os

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '5000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", 4))
keepalive = 5  # seconds an idle keep-alive connection stays open
timeout = 30  # seconds before a silent worker is restarted
graceful_timeout = 10
accesslog = None  # one access line per click would dominate the log
errorlog = "-"
# gunicorn 27 opens a control socket in the home folder by default. Several
# instances on one host would share it, and the service does not use it.
control_socket_disable = True

_embedded_service = None
_temporary_metrics_dir = None  # folder that on_exit removes, None when PROMETHEUS_MULTIPROC_DIR was set


def on_starting(server):
    """Prepare the metrics folder, then start the embedded Redis when no Redis is configured."""
    global _embedded_service, _temporary_metrics_dir
    import metrics_dir

    # Before anything imports prometheus_client, which reads the variable on import.
    folder, temporary = metrics_dir.prepare()
    if temporary:
        _temporary_metrics_dir = folder
    server.log.info("Workers keep their Prometheus metrics in %s", folder)

    if os.environ.get("REDIS_URL") or os.environ.get("REDIS_HOST"):
        return
    from app import create_app

    application = create_app()
    _embedded_service = application.extensions["fraud_detector"]
    os.environ["REDIS_URL"] = _embedded_service.embedded.url


def child_exit(server, worker):
    import metrics_dir

    metrics_dir.mark_worker_dead(worker.pid)


def on_exit(server):
    if _embedded_service is not None:
        _embedded_service.close()
    if _temporary_metrics_dir is not None:
        import metrics_dir

        metrics_dir.remove(_temporary_metrics_dir)
