# Image of the fraud detector: gunicorn serves the Flask app on port 5000.
#
# The same image runs the built-in stream consumer with `python consumer.py`
# (see docker-compose.yml). Configuration comes from the environment, as in
# the original service's run command (docs/deployment.md lists every variable):
#   docker run -e REDIS_HOST=redis.example -e REDIS_PORT=6379
#     -e CLICK_SPAM_THRESHOLD=3 -e CLICK_SPAM_WINDOW_IN_SEC=10 -p 5000:5000 IMAGE
# uPlot, the chart library of /dashboard, comes from the npm registry at build
# time; the app serves it from node_modules, never from a CDN.
FROM node:20-bookworm-slim AS frontend
WORKDIR /build
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error

FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=5000

WORKDIR /app

# The service runs as this unprivileged user. The source stays owned by root,
# so the process cannot change its own code.
RUN groupadd --system --gid 10001 fraud \
    && useradd --system --uid 10001 --gid fraud --no-create-home --home-dir /app fraud

# Dependencies come first, so a change to the source alone reuses this layer.
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

COPY . .
COPY --from=frontend /build/node_modules/uplot/dist/ node_modules/uplot/dist/

USER 10001:10001

EXPOSE 5000

# Liveness only: /healthz answers while the process serves requests. The slim
# image has no curl, so the probe uses the Python standard library, and an
# HTTP error status or a refused connection makes it exit non-zero.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '5000') + '/healthz', timeout=4)"]

CMD ["gunicorn", "-c", "gunicorn.conf.py", "app:app"]
