"""The baseline: a ~30-line Flask view that forwards to the upstream with requests.

    BENCH_UPSTREAM=http://127.0.0.1:9100 gunicorn -k gevent -w 1 bench.passthrough:app
"""
from gevent import monkey; monkey.patch_all()  # noqa: E702,I001

import os

import requests
from flask import Flask, Response, request

UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:9100")
session = requests.Session()
session.mount("http://", requests.adapters.HTTPAdapter(pool_connections=10, pool_maxsize=2000))
app = Flask(__name__)


@app.post("/v1/chat/completions")
def forward():
    body = request.get_data()
    stream = b'"stream": true' in body or b'"stream":true' in body
    upstream = session.post(UPSTREAM + "/v1/chat/completions", data=body, stream=stream,
                            headers={"Content-Type": "application/json", "Authorization": "Bearer x"})
    if stream:
        def relay():
            try:
                yield from upstream.iter_content(chunk_size=None)
            finally:
                upstream.close()
        return Response(relay(), status=upstream.status_code, mimetype="text/event-stream")
    return Response(upstream.content, status=upstream.status_code, mimetype="application/json")
