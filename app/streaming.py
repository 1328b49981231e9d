"""Iterating a provider stream with heartbeats, under gevent.

``with_heartbeats(iterator, interval)`` yields the iterator's items and
``HEARTBEAT`` whenever nothing arrived for ``interval`` seconds. Under a
gevent-patched process the producer runs in its own greenlet so a silent
upstream does not silence the client connection; closing the consumer kills
the producer at once, which closes the upstream response (its generator's
``finally``). Without gevent (in-process tests) it iterates directly.
"""
HEARTBEAT = object()
_END = object()


def _gevent_active():
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover
        return False
    return monkey.is_module_patched("socket")


def with_heartbeats(iterator, interval):
    if not interval or not _gevent_active():
        yield from iterator
        return
    import gevent
    from gevent.queue import Empty, Queue

    queue = Queue()

    def produce():
        try:
            for item in iterator:
                queue.put((True, item))
            queue.put((True, _END))
        except gevent.GreenletExit:
            close = getattr(iterator, "close", None)
            if close:
                close()
            raise
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            queue.put((False, exc))

    producer = gevent.spawn(produce)
    try:
        while True:
            try:
                ok, item = queue.get(timeout=interval)
            except Empty:
                yield HEARTBEAT
                continue
            if not ok:
                raise item
            if item is _END:
                return
            yield item
    finally:
        if not producer.dead:
            producer.kill(block=True, timeout=2)
