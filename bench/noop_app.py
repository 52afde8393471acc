"""A do-nothing JSON endpoint: the ceiling of `POST /` on a given machine.

It parses the JSON body and returns a small JSON object, with no validation
and no Redis call. Under the same `gunicorn.conf.py` as the service, its
requests per second are the most that any Flask endpoint of this shape can
reach on the machine:

    gunicorn -c gunicorn.conf.py bench.noop_app:app
"""

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.post("/")
def accept_click():
    """Parse the JSON body and return a fixed verdict for its device."""
    click = request.get_json()
    return jsonify({"device_id": click.get("device_id"), "status": "clean"})


@app.get("/healthz")
def healthz():
    """Return 200, so the benchmark can tell when the workers are up."""
    return {"status": "ok"}
