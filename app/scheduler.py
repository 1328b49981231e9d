"""Background duty of each server worker: re-sync knowledge sources whose interval is due.

Every worker runs the loop (a greenlet under gevent); the atomic claim in
``knowledge.claim_sync`` makes each due source sync in exactly one of them.
Started on the first request, never in tests or CLI commands.
"""
import logging
import threading
import time

log = logging.getLogger("chatport.scheduler")


def init_app(app):
    interval = float(app.config.get("KNOWLEDGE_SYNC_DUE_INTERVAL") or 0)
    if interval <= 0 or app.testing:
        return
    started = threading.Event()

    @app.before_request
    def _start_once():
        if started.is_set():
            return
        started.set()
        threading.Thread(target=_loop, args=(app, interval), name="sync-due", daemon=True).start()


def _loop(app, interval):
    from app.services import knowledge
    from app.storage.db import db

    while True:
        time.sleep(interval)
        try:
            with app.app_context(), db.connection_context():
                done = knowledge.sync_due(fetch_options=knowledge.fetch_options(app.config))
            if done:
                log.info("re-synced %d due knowledge source(s)", len(done))
        except Exception:  # noqa: BLE001 - keep the loop alive
            log.exception("due knowledge sync failed")
