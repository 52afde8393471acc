"""The service with orjson as Flask's JSON provider, to measure that change.

    gunicorn -c gunicorn.conf.py bench.orjson_app:app

Used by `bench/experiments.py` only. It needs orjson importable, for example
from a folder filled with `pip install --target DIR orjson==3.13.0`.
"""

import orjson
from flask.json.provider import JSONProvider

from app import create_app


class OrjsonProvider(JSONProvider):
    """Flask's JSON provider on orjson. Keys keep their insertion order, as the service sets."""

    def dumps(self, obj, **kwargs):
        return orjson.dumps(obj).decode()

    def loads(self, s, **kwargs):
        return orjson.loads(s)

    def response(self, *args, **kwargs):
        obj = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(orjson.dumps(obj), mimetype="application/json")


app = create_app()
app.json = OrjsonProvider(app)
