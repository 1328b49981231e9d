"""Iterating a provider stream with heartbeats, under gevent.

``with_heartbeats(iterator, interval)`` yields the iterator's items and ``HEARTBEAT`` whenever
nothing arrived for ``interval`` seconds. Under a gevent-patched process the provider is
iterated in its own greenlet (the producer), so a silent upstream does not silence the client
connection: the turn keeps sending heartbeats and checking for a stop, its time limit and a
client that went away. Closing the consumer kills the producer at once, which closes the
upstream response (its generator's ``finally``). Without gevent (in-process tests) it iterates
directly.

The two greenlets hand items over by switching to each other directly, not through the hub.
Under load the hub's queue of ready greenlets is long (a thousand streams starting at once),
and each trip through it costs a full turn of that queue: a queue between the greenlets cost
two such trips before the first token (starting the producer, then waking the consumer), and
one per delta. Here the producer starts at once and runs until it first waits for the network;
an item goes to a waiting consumer at once, and the consumer resumes the producer when it
wants the next one. Only the greenlet that is waiting for the other is ever switched into, and
only by the other (or by the heartbeat timer, for a consumer waiting on a silent producer):

- the consumer waits for an item in ``producer.switch()`` (the producer had handed over an
  item and is suspended until asked for more) or in ``hub.switch()`` (the producer is waiting
  for the network, or has not been asked yet);
- the producer, with an item: switches to the consumer if it is waiting, else (the consumer is
  busy, say writing to a slow client) keeps the item and reads on. Text items kept that way are
  joined into one when the consumer takes them: one that falls behind writes what has arrived
  in one frame instead of one per token. Nothing waits for more text to arrive.
- the heartbeat timer, after ``interval`` s of a waiting consumer, switches to it with
  ``HEARTBEAT``.
"""
from collections import deque

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
    relay = _Relay(iterator, interval)
    try:
        while True:
            ok, item = relay.next()
            if not ok:
                raise item
            if item is _END:
                return
            yield item
    finally:
        relay.close()


class _Relay:
    """The producer greenlet and the consumer's side of the hand-over (see the module doc)."""

    def __init__(self, iterator, interval):
        import gevent

        self._gevent = gevent
        self.iterator = iterator
        self.interval = interval
        self.hub = gevent.get_hub()
        self.consumer = None
        self.producer = gevent.Greenlet(self._produce)
        self.kept = deque()  # (ok, item) handed over while the consumer was busy
        self.consumer_waiting = False  # suspended until an item (or a heartbeat) is switched in
        self.producer_parked = True  # suspended until the consumer asks (or not started yet)
        self.timer = self.hub.loop.timer(interval)

    # ------------------------------------------------------------ the producer greenlet

    def _produce(self):
        try:
            for item in self.iterator:
                self._hand_over((True, item))
            self._finish((True, _END))
        except self._gevent.GreenletExit:
            close = getattr(self.iterator, "close", None)
            if close:
                close()
            raise
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            self._finish((False, exc))

    def _hand_over(self, entry):
        if self.consumer_waiting:
            self.consumer_waiting = False
            self.producer_parked = True
            self.consumer.switch(entry)  # back here when the consumer wants the next item
        else:
            self.kept.append(entry)

    def _finish(self, entry):
        # The last entry: handed over through the hub so that this greenlet ends first (it
        # must not stay suspended in a switch that nobody will answer).
        if self.consumer_waiting:
            self.consumer_waiting = False
            self.hub.loop.run_callback(self.consumer.switch, entry)
        else:
            self.kept.append(entry)

    def _beat(self):  # the timer, in the hub: a consumer still waiting gets a heartbeat
        if self.consumer_waiting:
            self.consumer_waiting = False
            self.consumer.switch((True, HEARTBEAT))

    # ------------------------------------------------------------ the consumer (the request)

    def next(self):
        self.consumer = self._gevent.getcurrent()  # whoever iterates is the one to switch to
        kept = self.kept
        if kept:
            entry = kept.popleft()
            if entry[0] and isinstance(entry[1], str) and kept and kept[0][0] and isinstance(kept[0][1], str):
                parts = [entry[1]]
                while kept and kept[0][0] and isinstance(kept[0][1], str):
                    parts.append(kept.popleft()[1])
                entry = (True, "".join(parts))
            return entry
        self.consumer_waiting = True
        self.timer.start(self._beat)
        try:
            if self.producer_parked:
                self.producer_parked = False
                return self.producer.switch()  # runs the producer until it hands over or waits
            return self.hub.switch()
        finally:
            self.timer.stop()
            self.consumer_waiting = False

    def close(self):
        self.timer.stop()
        self.timer.close()
        if self.producer:  # started and not dead
            self.producer.kill(block=True, timeout=2)
        elif not self.producer.dead:
            self.producer.kill(block=False)  # never started: it will not run
