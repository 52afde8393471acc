"""The Flask application: `create_app()` builds it, `app` is the WSGI entry point.

`python app.py` runs the development server (port 5000 unless PORT is set);
`gunicorn -c gunicorn.conf.py app:app` runs it in production. Importing this
module connects to nothing: `app` is built on first access.
"""

import logging
import sys

from flask import Flask, request

import api
import batch
import constants
import dashboard
import errors
import health
import metrics
from config import ConfigError, load_settings
from embedded import EmbeddedRedis
from ip_lists import admin_api as ip_lists_admin_api
from ip_lists import cli as ip_lists_cli
from logs import configure_logging
from redis_conn import UNAVAILABLE_ERRORS, connect
from service import FraudDetector
from setup import SetupError

logger = logging.getLogger(__name__)


def create_app(settings=None, client=None, start_consumer=None):
    """Build the application.

    Args:
        settings: `config.Settings`; read from the environment when None.
        client: a redis-py client; when None, one is made from the settings,
            after starting the embedded server if no Redis is configured.
        start_consumer: run the built-in worker in a thread of this process.
            When None, it runs only with the embedded server.
    """
    settings = settings or load_settings()
    configure_logging(settings)

    embedded = None
    if client is None:
        url = settings.redis_url
        if url is None:
            embedded = EmbeddedRedis(settings.embedded_redis_port).start()
            url = embedded.url
        client = connect(url, settings.redis_timeout_sec)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = constants.MAX_CONTENT_LENGTH
    app.json.sort_keys = False
    service = FraudDetector(client, settings, embedded)
    app.extensions["fraud_detector"] = service

    app.register_blueprint(api.blueprint)
    app.register_blueprint(batch.blueprint)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(ip_lists_admin_api.blueprint)
    app.cli.add_command(ip_lists_cli.blacklist_cli)
    app.cli.add_command(ip_lists_cli.allowlist_cli)
    app.register_blueprint(dashboard.blueprint)
    errors.register_error_handlers(app)
    metrics.init_app(app)

    @app.before_request
    def prepare_redis():
        # Health checks, /metrics and the dashboard handle Redis errors themselves
        # and need no set-up, so they keep responding while Redis is down.
        if request.blueprint not in (health.blueprint.name, metrics.blueprint.name,
                                     dashboard.blueprint.name):
            service.prepare()

    try:
        service.prepare()
    except UNAVAILABLE_ERRORS as error:
        logger.warning("Redis is unreachable at start-up (%s); set-up runs again on the next request", error)

    if start_consumer is None:
        start_consumer = embedded is not None
    if start_consumer:
        service.start_consumer_thread()
    logger.info(
        "Fraud detector started: click-spam threshold %d in %g s, stream %s, consumer %s",
        settings.click_spam_threshold, settings.click_spam_window_sec,
        settings.stream_key, service.consumer_kind or "not registered yet (Redis unreachable)",
    )
    return app


def __getattr__(name):
    # Build the WSGI application on first access, so `gunicorn app:app` works
    # while `import app` connects to nothing.
    if name == "app":
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main():
    """Run the development server."""
    import os

    try:
        settings = load_settings()
        application = create_app(settings)
    except ConfigError as error:
        print(f"Invalid configuration: {error}", file=sys.stderr)
        return 2
    except SetupError as error:
        print(f"Set-up failed: {error}", file=sys.stderr)
        return 2
    host = os.environ.get("HOST", "127.0.0.1")
    logger.info("Development server on http://%s:%d", host, settings.port)
    application.run(host=host, port=settings.port, threaded=True, use_reloader=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
