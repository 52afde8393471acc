#!/bin/sh
# Install what the tests need besides requirements-dev.txt:
#  - the npm packages of package-lock.json (uPlot, which /dashboard serves),
#    with `npm ci` when node_modules is missing or older than the lock file;
#  - Debian's chromium for the browser test of /dashboard, installed with
#    apt-get when the script runs as root. Otherwise it prints how to install it.
# Running it again changes nothing, and it prints only errors.
set -eu
cd "$(dirname "$0")/.."

if ! command -v npm >/dev/null 2>&1; then
    echo "npm not found: install Node.js 20 or later with npm, then run $0 again." >&2
    exit 1
fi
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error >/dev/null
fi

if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        echo "chromium not found: install it with 'sudo apt-get install -y chromium'" \
            "(Debian), or run $0 as root to do so." >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
