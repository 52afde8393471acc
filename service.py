"""The state that the HTTP handlers share: client, settings, checker, consumer."""

import logging
import threading

import setup
from fraud_checks import ClickChecker, KeysMissing

logger = logging.getLogger(__name__)


class FraudDetector:
    """Holds what a request needs, and prepares Redis once it can be reached.

    Set-up runs at start-up; when Redis is down then, it runs again before
    the next request, so the service recovers without a restart.
    """

    def __init__(self, client, settings, embedded=None):
        self.client = client
        self.settings = settings
        self.embedded = embedded
        self.checker = ClickChecker(client, settings)
        self.consumer_kind = None
        self.consumer_thread = None
        self._lock = threading.Lock()

    @property
    def prepared(self):
        return self.consumer_kind is not None

    def prepare(self):
        """Create the keys and register the stream consumer, once per process."""
        if self.prepared:
            return self.consumer_kind
        with self._lock:
            if not self.prepared:
                self.consumer_kind = setup.register_stream_consumer(self.client, self.settings)
        return self.consumer_kind

    def prepare_again(self):
        """Run the set-up again, after Redis lost the service's keys."""
        with self._lock:
            self.consumer_kind = None
        logger.warning("Redis lost the keys of the service (restart without persistence or "
                       "FLUSHALL?); running the set-up again")
        return self.prepare()

    def check_many(self, clicks):
        """Check clicks in one script call; set up again once if Redis lost the keys."""
        try:
            return self.checker.check_many(clicks)
        except KeysMissing:
            self.prepare_again()
            return self.checker.check_many(clicks)

    def check(self, click):
        return self.check_many([click])[0]

    def start_consumer_thread(self):
        """Run the built-in worker inside this process (the embedded default)."""
        from consumer import ConsumerThread
        from redis_conn import connect

        url = self.embedded.url if self.embedded else self.settings.redis_url
        client = connect(url, self.settings.redis_timeout_sec,
                         block_sec=self.settings.consumer_block_ms / 1000)
        self.consumer_thread = ConsumerThread(client, self.settings)
        self.consumer_thread.start()
        return self.consumer_thread

    def close(self):
        if self.consumer_thread:
            self.consumer_thread.stop()
        if self.embedded:
            self.embedded.stop()
