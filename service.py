"""The state that the HTTP handlers share: client, settings, checker, consumer."""

import logging
import threading

import setup
from fraud_checks import ClickChecker

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
