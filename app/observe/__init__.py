"""Seeing a running chatport: ``GET /metrics`` (Prometheus), request ids and the access log,
``GET /readyz``. docs/operating.md describes them for operators.

The per-request work is done in ``app.metering.policy`` (which already times every metered
request): when a response closes it counts the request (``metrics``) and writes its access line
(``logs``). Neither ``/metrics`` nor ``/readyz`` is metered.
"""
import hmac

from flask import Response, current_app, jsonify, request

from app.errors import Unauthorized
from app.observe import logs, metrics

PATHS = ("/metrics", "/readyz")


def _bearer():
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def check_metrics_access():
    """Raises Unauthorized unless the request's bearer token is ``METRICS_TOKEN`` or an admin key."""
    token = _bearer()
    expected = current_app.config.get("METRICS_TOKEN")
    if token and expected and hmac.compare_digest(token.encode(), str(expected).encode()):
        return
    refusal = Unauthorized("/metrics needs 'Authorization: Bearer <admin key or METRICS_TOKEN>'")
    if not token:
        raise refusal
    from app.services import keys

    try:
        key = keys.authenticate(token, last_used_interval=current_app.config["KEY_LAST_USED_INTERVAL"],
                                cache_seconds=float(current_app.config.get("KEY_CACHE_SECONDS") or 0))
    except Unauthorized:
        raise refusal from None
    if not keys.is_admin(key):
        raise refusal


def readiness():
    """``(ready, reason)``: the database answers and its schema is the one this code needs."""
    from app.storage import db, migrations

    try:
        with db.db.connection_context():
            version = migrations.current_version()
    except Exception as exc:  # noqa: BLE001 - unready, not a 500
        return False, f"database unreachable: {type(exc).__name__}"
    if version != migrations.LATEST:
        return False, f"schema version {version}, this code needs {migrations.LATEST} (run: chatport db upgrade)"
    return True, None


def init_app(app):
    """Logging, the request-id header and the two routes."""
    app.extensions["chatport_access_log"] = logs.configure(app.config)

    @app.after_request
    def _request_id_header(response):
        response.headers[logs.HEADER] = logs.request_id()
        return response

    @app.get("/metrics")
    def prometheus_metrics():
        """Prometheus text format: every worker's counters (admin key or METRICS_TOKEN)."""
        check_metrics_access()
        return Response(metrics.render(), mimetype="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/readyz")
    def readyz():
        """Ready to serve: database reachable, migrations current (503 with the reason if not)."""
        ready, reason = readiness()
        if not ready:
            return jsonify({"status": "unready", "reason": reason}), 503
        return jsonify({"status": "ready"})
