"""The embedded Redis-compatible server used when no Redis is configured.

It is fakeredis behind a real TCP listener on 127.0.0.1, so `redis-cli -p
PORT CF.ADDNX ip_cf 203.0.113.7` works against it. It keeps everything in the
memory of this process: nothing is persisted.
"""

import logging
import threading

from fakeredis import TcpFakeServer

logger = logging.getLogger(__name__)


class _FakeRedisListener(TcpFakeServer):
    # socketserver's default listen backlog of 5 refuses connections when
    # many request threads connect at once, which clients see as 503s.
    request_queue_size = 128


class EmbeddedRedis:
    """A fakeredis server that serves TCP clients from a background thread."""

    def __init__(self, port=0):
        self.server = _FakeRedisListener(("127.0.0.1", port), server_type="redis")
        # fakeredis leaves client threads non-daemon, which would keep the
        # process alive after the service stops.
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="embedded-redis", daemon=True
        )

    @property
    def port(self):
        return self.server.server_address[1]

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        self.thread.start()
        logger.warning(
            "No Redis configured (REDIS_URL or REDIS_HOST): started the embedded "
            "fakeredis server on 127.0.0.1:%d. Nothing is persisted; data is lost "
            "when the service stops.",
            self.port,
        )
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        logger.info("Stopped the embedded Redis server on 127.0.0.1:%d", self.port)
