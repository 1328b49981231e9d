"""app.storage.prepared: SQL built once, run on the process's own SQLite connection outside transactions."""
import os
import threading

import peewee
import pytest

from app.ids import new_id
from app.storage import prepared
from app.storage.db import db
from app.storage.models import Bot, Conversation


def _conv(bot, conv_id=None):
    return Conversation(id=conv_id or new_id(), bot=bot.id, surface="api", title="")


def _insert(conv):
    """Insert a new Conversation instance through prepared (every column, as built)."""
    prepared.insert_values(Conversation, {f.name: conv.__data__.get(f.name) for f in prepared.columns(Conversation)})
    return conv


def _get(conv_id):
    return prepared.first(Conversation, "test_conv_by_id",
                         lambda: Conversation.select().where(Conversation.id == "?"), conv_id)


@pytest.fixture
def ctx(app):
    with app.app_context(), db.connection_context():
        yield app


def test_rows_come_back_as_models_on_either_database(ctx):
    bot = Bot.create(name="b", model="echo/echo")
    conv = _insert(_conv(bot))
    got = _get(conv.id)
    assert isinstance(got, Conversation) and got.id == conv.id and got.bot_id == bot.id
    assert got.created_at == Conversation.get_by_id(conv.id).created_at  # converted like peewee's own
    assert _get("no-such-id") is None
    assert prepared.execute("test_touch", lambda: Conversation.update(title="?").where(Conversation.id == "?"),
                           "renamed", conv.id) == 1
    assert Conversation.get_by_id(conv.id).title == "renamed"  # visible to the pooled connection


def test_rows_are_plain_tuples_in_query_order(ctx):
    bot = Bot.create(name="b", model="echo/echo")
    first, second = _insert(_conv(bot)), _insert(_conv(bot))
    prepared.execute("test_title", lambda: Conversation.update(title="?").where(Conversation.id == "?"),
                    "second", second.id)
    got = prepared.rows("test_titles", lambda: Conversation.select(Conversation.id, Conversation.title)
                       .where(Conversation.bot == "?").order_by(Conversation.id.desc()), bot.id)
    assert [tuple(row) for row in got] == [(second.id, "second"), (first.id, "")]
    assert prepared.rows("test_titles", lambda: None, "no-such-bot") == []  # built once: the lambda is not called
    with pytest.raises(ValueError, match="parameters"):
        prepared.rows("test_titles_2", lambda: Conversation.select().where(Conversation.bot == "?"))


def test_joined_rows_come_back_as_one_instance_per_model_then_the_extras(ctx):
    bot = Bot.create(name="b", model="echo/echo", knowledge={"top_k": 2}, temperature=0.5)
    conv = _insert(_conv(bot))
    build = lambda: (Conversation.select(*prepared.columns(Conversation), *prepared.columns(Bot),  # noqa: E731
                                         Conversation.title.is_null(False))
                     .join(Bot, on=(Conversation.bot == Bot.id)).where(Conversation.id == "?"))
    [(got_conv, got_bot, titled)] = prepared.joined("test_joined", build, (Conversation, Bot), conv.id)
    assert got_conv.id == conv.id and got_conv.bot_id == bot.id
    assert got_conv.created_at == Conversation.get_by_id(conv.id).created_at  # a datetime, as peewee reads it
    again = Bot.get_by_id(bot.id)
    assert (got_bot.knowledge, got_bot.temperature, got_bot.enabled) == ({"top_k": 2}, 0.5, True)
    assert got_bot.created_at == again.created_at and got_bot.allowed_models == again.allowed_models
    assert bool(titled) is True
    assert prepared.joined("test_joined", build, (Conversation, Bot), "no-such-id") == []


def test_duplicate_insert_raises_peewees_integrity_error(ctx):
    bot = Bot.create(name="b", model="echo/echo")
    conv = _insert(_conv(bot))
    with pytest.raises(peewee.IntegrityError):
        _insert(_conv(bot, conv.id))


def test_statements_join_an_open_transaction(ctx):
    bot = Bot.create(name="b", model="echo/echo")
    conv_id = new_id()
    with db.atomic() as txn:
        _insert(_conv(bot, conv_id))
        assert _get(conv_id) is not None  # sees its own uncommitted row
        txn.rollback()
    assert _get(conv_id) is None and not Conversation.select().where(Conversation.id == conv_id).exists()


def test_atomic_commits_together_or_not_at_all(ctx):
    bot = Bot.create(name="b", model="echo/echo")
    kept, dropped = _conv(bot), _conv(bot)
    with prepared.atomic():
        _insert(kept)
        prepared.execute("test_title", lambda: Conversation.update(title="?").where(Conversation.id == "?"),
                        "both", kept.id)
    assert Conversation.get_by_id(kept.id).title == "both"  # committed: seen by the pooled connection
    with pytest.raises(peewee.IntegrityError):
        with prepared.atomic():
            _insert(dropped)
            _insert(_conv(bot, kept.id))  # a duplicate: the block fails
    assert _get(dropped.id) is None  # rolled back with it
    later = _insert(_conv(bot))  # and the connection is not left inside a transaction
    assert Conversation.select().where(Conversation.id == later.id).exists()


def _in_thread(fn):
    """``fn()`` run in another thread: its value, or its exception raised here."""
    out = []

    def target():
        try:
            out.append((fn(), None))
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            out.append((None, exc))

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(10)
    value, error = out[0]
    if error is not None:
        raise error
    return value


def _in_child(fn):
    """Run ``fn`` in a forked child; return its exit status (0 when ``fn()`` is true)."""
    pid = os.fork()
    if pid == 0:  # the child: never back into pytest
        try:
            os._exit(0 if fn() else 1)
        except BaseException:
            os._exit(2)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_threads_and_forked_children_never_share_a_connection(sqlite_app):
    """On a SQLite file the statements of another thread, or of a forked child, do not run on
    this one's connection: they do not see its uncommitted writes, and foreign keys hold there too."""
    with sqlite_app.app_context(), db.connection_context():
        bot = Bot.create(name="b", model="echo/echo")
        with pytest.raises(peewee.IntegrityError):
            _insert(Conversation(id=new_id(), bot="no-such-bot", surface="api", title=""))
        conv = _conv(bot)
        with prepared.atomic():
            _insert(conv)
            assert _get(conv.id) is not None  # this connection sees its own write
            assert _in_thread(lambda: _get(conv.id)) is None
            assert _in_child(lambda: _get(conv.id) is None) == 0
        assert _in_thread(lambda: _get(conv.id)).id == conv.id  # committed: seen everywhere
        assert _in_child(lambda: _get(conv.id).id == conv.id) == 0
        with pytest.raises(peewee.IntegrityError):
            _in_thread(lambda: _insert(Conversation(id=new_id(), bot="no-such-bot", surface="api", title="")))


def test_a_transaction_that_reads_then_writes_is_not_broken_by_a_commit_in_between(sqlite_app):
    """``db.atomic()`` (the proxy every service uses) takes SQLite's write lock at BEGIN. A write
    another thread commits on its own connection after the transaction's first read (as a request
    thread's usage row does while a knowledge sync replaces a page) waits for the transaction to
    end; it does not make the transaction's first write fail at once with "database is locked"."""
    with sqlite_app.app_context(), db.connection_context():
        bot = Bot.create(name="b", model="echo/echo")
        other = _conv(bot)
        started, committed, errors = threading.Event(), threading.Event(), []

        def other_thread_writes():
            started.set()
            try:
                _insert(other)  # on that thread's own connection
                committed.set()
            except Exception as exc:  # noqa: BLE001 - checked below
                errors.append(exc)

        thread = threading.Thread(target=other_thread_writes)
        with db.atomic():
            assert Bot.get_by_id(bot.id).name == "b"  # the transaction's first read
            thread.start()
            assert started.wait(5)
            committed_inside = committed.wait(1)  # the other write waits for this transaction
            Bot.update(name="renamed").where(Bot.id == bot.id).execute()
        thread.join(10)
        assert not committed_inside and errors == [] and committed.is_set()
        assert Bot.get_by_id(bot.id).name == "renamed" and _get(other.id) is not None


def test_insert_values_writes_every_column_and_insists_on_all(ctx):
    from datetime import datetime

    from app.storage.models import Usage

    values = dict(id=new_id(), created_at=datetime(2026, 11, 25, 12, 0, 1), key_id="k1", dialect="openai",
                  category="conversation", endpoint="POST /v1/chat/completions", bot_id=None,
                  automation_id=None, model="echo/echo", prompt_tokens=3, completion_tokens=5,
                  tokens_estimated=True, credits=2, status=200, latency_ms=1.5)
    prepared.insert_values(Usage, values)
    row = Usage.get_by_id(values["id"])
    assert {name: getattr(row, name) for name in values} == values
    with pytest.raises(KeyError):
        prepared.insert_values(Usage, {k: v for k, v in values.items() if k != "credits"} | {"id": new_id()})


GEVENT_SCRIPT = r"""
from gevent import monkey; monkey.patch_all()
import sys, gevent
from app import create_app
from app.storage import prepared
app = create_app({"DATABASE_URL": "sqlite:///" + sys.argv[1]})
with app.app_context():
    conns = [job.value for job in gevent.joinall([gevent.spawn(prepared._direct) for _ in range(5)])]
print(len({id(c) for c in conns}), all(c is not None for c in conns))
"""


def test_greenlets_of_a_worker_share_its_connection(tmp_path):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATPORT_")}
    env.update(PYTHONPATH=root, CHATPORT_INSTANCE_PATH=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", GEVENT_SCRIPT, str(tmp_path / "g.db")], env=env, cwd=root,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["1", "True"]
