"""Iterating a provider stream with heartbeats, under gevent.

``with_heartbeats(iterator, interval)`` yields the iterator's items and
``HEARTBEAT`` whenever nothing arrived for ``interval`` seconds. Under a
gevent-patched process the producer runs in its own greenlet so a silent
upstream does not silence the client connection; closing the consumer kills
the producer at once, which closes the upstream response (its generator's
``finally``). Without gevent (in-process tests) it iterates directly.

Text deltas that are already waiting when the consumer takes one are joined
into one item: a worker that keeps up sends every delta as it comes, one that
falls behind (many streams at once) sends what has arrived in one write
instead of one write, one frame and one chunk per token. Nothing waits for
more text to arrive.
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
    held = None  # an item taken while joining text, handled next
    try:
        while True:
            if held is not None:
                (ok, item), held = held, None
            else:
                try:
                    ok, item = queue.get(timeout=interval)
                except Empty:
                    yield HEARTBEAT
                    continue
            if not ok:
                raise item
            if item is _END:
                return
            if isinstance(item, str) and queue.qsize():
                parts = [item]
                while queue.qsize():
                    entry = queue.get_nowait()
                    if entry[0] and isinstance(entry[1], str):
                        parts.append(entry[1])
                    else:
                        held = entry
                        break
                item = "".join(parts)
            yield item
    finally:
        if not producer.dead:
            producer.kill(block=True, timeout=2)
