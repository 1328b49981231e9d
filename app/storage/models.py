"""Peewee models for the whole domain.

Models hold data and small query helpers; rules live in ``app/services``.
Ids are time-ordered UUID strings; times are naive UTC datetimes.
"""
import json
from datetime import datetime

import peewee
from peewee import (
    BigIntegerField,
    BooleanField,
    CharField,
    DoubleField,
    FloatField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)

from app import clock
from app.ids import new_id
from app.storage.db import db


class JSONField(TextField):
    """JSON stored as text: portable across SQLite and PostgreSQL."""

    def db_value(self, value):
        return None if value is None else json.dumps(value, separators=(",", ":"))

    def python_value(self, value):
        return None if value is None else json.loads(value)


class DateTimeField(peewee.DateTimeField):
    """peewee's, reading SQLite's text timestamps with ``datetime.fromisoformat`` (0.2 µs a value)
    before trying peewee's ``strptime`` formats (4 µs): every row read parses one or two."""

    def python_value(self, value):
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value)
            except ValueError:
                pass
        return super().python_value(value)


def IdField(**kw):
    return CharField(primary_key=True, max_length=36, default=new_id, **kw)


class BaseModel(Model):
    class Meta:
        database = db
        legacy_table_names = False


class SchemaVersion(BaseModel):
    """One row: the schema version this database is at."""

    version = IntegerField()
    upgraded_at = DateTimeField(default=clock.now)

    class Meta:
        table_name = "chatport_schema"


class Bot(BaseModel):
    id = IdField()
    name = CharField(max_length=200)
    instructions = TextField(default="")
    model = CharField(max_length=200)
    temperature = FloatField(null=True)
    max_tokens = IntegerField(null=True)
    greeting = TextField(default="")
    # Knowledge retrieval settings: {"top_k": int, "max_chars": int, ...}
    knowledge = JSONField(default=dict)
    # Models a caller may switch to per request (chat API `model`); empty: only `model`.
    allowed_models = JSONField(default=list)
    enabled = BooleanField(default=True)
    created_at = DateTimeField(default=clock.now, index=True)
    updated_at = DateTimeField(default=clock.now)


class Channel(BaseModel):
    """A bot's API channel (channel API): a secret key, hashed."""

    id = IdField()
    bot = ForeignKeyField(Bot, backref="channels", on_delete="CASCADE")
    name = CharField(max_length=200, default="API")
    secret_hash = CharField(max_length=64, unique=True)
    secret_prefix = CharField(max_length=16)
    enabled = BooleanField(default=True)
    created_at = DateTimeField(default=clock.now, index=True)
    updated_at = DateTimeField(default=clock.now)


class ApiKey(BaseModel):
    """Bearer keys. Only a SHA-256 hash and a display prefix/last4 are stored."""

    id = IdField()
    name = CharField(max_length=200, default="")
    kind = CharField(max_length=10)  # "admin" | "client"
    key_hash = CharField(max_length=64, unique=True)
    prefix = CharField(max_length=16)
    last4 = CharField(max_length=4)
    enabled = BooleanField(default=True)
    # Client keys: ids of bots / automations this key may use (empty = all).
    bot_ids = JSONField(default=list)
    automation_ids = JSONField(default=list)
    # Rate-limit plan name and per-key overrides {category: requests_per_minute}.
    plan = CharField(max_length=50, null=True)
    rate_limits = JSONField(default=dict)
    # Credits per calendar month (None = unlimited).
    credit_quota = IntegerField(null=True)
    created_at = DateTimeField(default=clock.now, index=True)
    last_used_at = DateTimeField(null=True)


class EndUser(BaseModel):
    """An external user id with properties: a label, never an identity."""

    id = IdField()
    external_id = CharField(max_length=200, unique=True)
    properties = JSONField(default=dict)
    created_at = DateTimeField(default=clock.now, index=True)
    updated_at = DateTimeField(default=clock.now)
    last_seen_at = DateTimeField(null=True)


class Conversation(BaseModel):
    id = IdField()
    # The bot it is with; None for a conversation with a provider model itself (``model``), as
    # the Responses API keeps them (schema version 14).
    bot = ForeignKeyField(Bot, null=True, backref="conversations", on_delete="CASCADE")
    channel = ForeignKeyField(Channel, null=True, backref="conversations", on_delete="SET NULL")
    # Where it came from: "api", "channel", "chat", "openai", "responses" (the Responses API).
    surface = CharField(max_length=20, default="api")
    end_user = ForeignKeyField(EndUser, null=True, backref="conversations", on_delete="SET NULL")
    api_key = ForeignKeyField(ApiKey, null=True, backref="conversations", on_delete="SET NULL")
    title = CharField(max_length=200, default="")
    # The provider model (or alias) of a conversation without a bot; None with a bot.
    model = CharField(max_length=200, null=True)
    created_at = DateTimeField(default=clock.now, index=True)
    updated_at = DateTimeField(default=clock.now)


class Message(BaseModel):
    id = IdField()
    # No index of its own: (conversation, created_at, id) below serves lookups and the cascade.
    conversation = ForeignKeyField(Conversation, backref="messages", on_delete="CASCADE", index=False)
    role = CharField(max_length=20)  # "system" | "developer" | "user" | "assistant" | "tool"
    content = TextField(default="")  # the text (of its text parts, for a message with parts)
    # A message that is more than text, as sent: {"content": [parts], "tool_calls": [...],
    # "tool_call_id", "name"} (the keys it has); None for plain text (schema version 13).
    structure = JSONField(null=True)
    # "complete" | "incomplete" | "error"
    status = CharField(max_length=20, default="complete")
    error = TextField(null=True)
    model = CharField(max_length=200, null=True)
    prompt_tokens = IntegerField(default=0)
    completion_tokens = IntegerField(default=0)
    tokens_estimated = BooleanField(default=False)
    # Knowledge passages the answer was grounded on.
    citations = JSONField(default=list)
    rating = CharField(max_length=10, null=True)  # "like" | "dislike"
    rating_comment = TextField(null=True)
    created_at = DateTimeField(default=clock.now)

    class Meta:
        # A conversation's history and listings read "its messages in time order". Every turn
        # writes two messages, so this is their only secondary index (schema version 8).
        indexes = ((("conversation", "created_at", "id"), False),)


class GenerationStop(BaseModel):
    """The stop switch of an answer being generated, visible to every worker.

    Written with the turn's user message and deleted with the saving of the answer, so a row
    exists exactly while its generation runs (rows of a worker that died mid-turn are purged
    once older than ``STREAM_TIMEOUT``). A stop request sets ``stop_requested``; the running
    turn polls it."""

    id = CharField(primary_key=True, max_length=36)  # the generation (assistant message) id
    conversation_id = CharField(max_length=36, null=True)  # a stop names it: checked against it
    stop_requested = BooleanField(default=False)
    created_at = DateTimeField(default=clock.now)


class StoredResponse(BaseModel):
    """A response of the Responses API kept with ``store``: a turn of a conversation.

    Its id is the id of the answer (the assistant message the turn writes at its end, so a
    response whose message is not there yet is in progress). ``input_ids`` are the messages
    this request added (its input items, in order), ``previous`` the answer it continued, and
    ``params`` what the request set that the response object shows again (instructions,
    tools, text format, sampling, metadata...), in the Responses wire shape."""

    id = CharField(primary_key=True, max_length=36)
    conversation = ForeignKeyField(Conversation, backref="responses", on_delete="CASCADE")
    previous = CharField(max_length=36, null=True)
    input_ids = JSONField(default=list)
    params = JSONField(default=dict)
    created_at = DateTimeField(default=clock.now)

    class Meta:
        table_name = "response"


class KnowledgeSource(BaseModel):
    """A data source ("folder"): MANUAL rows, one TEXT body, or a URL."""

    id = IdField()
    name = CharField(max_length=200)
    type = CharField(max_length=10, default="MANUAL")  # MANUAL | TEXT | URL
    url = TextField(null=True)
    sync_interval = CharField(max_length=10, null=True)  # day | week | month | None
    status = CharField(max_length=20, default="not_synced")
    error = TextField(null=True)
    last_sync = DateTimeField(null=True)
    next_sync_at = DateTimeField(null=True, index=True)
    sync_started_at = DateTimeField(null=True)
    created_at = DateTimeField(default=clock.now, index=True)
    updated_at = DateTimeField(default=clock.now)


class BotSource(BaseModel):
    """Which sources a bot retrieves from."""

    bot = ForeignKeyField(Bot, backref="source_links", on_delete="CASCADE")
    source = ForeignKeyField(KnowledgeSource, backref="bot_links", on_delete="CASCADE")

    class Meta:
        indexes = ((("bot", "source"), True),)


class Tag(BaseModel):
    id = IdField()
    name = CharField(max_length=100, unique=True)
    created_at = DateTimeField(default=clock.now)


class KnowledgeRow(BaseModel):
    """A document in a source: name, markdown content, tags."""

    id = IdField()
    source = ForeignKeyField(KnowledgeSource, backref="rows", on_delete="CASCADE")
    name = CharField(max_length=500, default="")
    content = TextField(default="")
    char_count = IntegerField(default=0)
    status = CharField(max_length=20, default="not_synced")
    error = TextField(null=True)
    last_sync = DateTimeField(null=True)
    created_at = DateTimeField(default=clock.now, index=True)
    updated_at = DateTimeField(default=clock.now)


class RowTag(BaseModel):
    row = ForeignKeyField(KnowledgeRow, backref="tag_links", on_delete="CASCADE")
    tag = ForeignKeyField(Tag, backref="row_links", on_delete="CASCADE")

    class Meta:
        indexes = ((("row", "tag"), True),)


class KnowledgeChunk(BaseModel):
    """A passage of a row, the unit that search ranks."""

    id = IdField()
    row = ForeignKeyField(KnowledgeRow, backref="chunks", on_delete="CASCADE")
    source = ForeignKeyField(KnowledgeSource, backref="chunks", on_delete="CASCADE")
    position = IntegerField(default=0)
    heading = TextField(default="")
    content = TextField()
    # The chunk's key in SQLite's full-text table (its rowid there): a column of its own, since
    # this table's implicit rowid is not stable (VACUUM may renumber it). Unused on PostgreSQL.
    seq = IntegerField(null=True, unique=True)


class Automation(BaseModel):
    """A flow: named prompt steps; reachable by id and by endpoint slug."""

    id = IdField()
    name = CharField(max_length=200)
    description = TextField(default="")
    endpoint = CharField(max_length=100, null=True, unique=True)
    api_enabled = BooleanField(default=True)
    # [{"name": "user_name", "default": "..."?}, ...]
    inputs = JSONField(default=list)
    returns = JSONField(default=lambda: ["response"])
    created_at = DateTimeField(default=clock.now, index=True)
    updated_at = DateTimeField(default=clock.now)


class AutomationStep(BaseModel):
    id = IdField()
    automation = ForeignKeyField(Automation, backref="steps", on_delete="CASCADE")
    position = IntegerField()
    name = CharField(max_length=100, default="")
    prompt = TextField()
    model = CharField(max_length=200)
    options = JSONField(default=dict)
    output = CharField(max_length=100, default="response")
    result_type = CharField(max_length=10, default="text")  # text | list
    # {"sources": [ids or names], "tags": [ids or names], "top_k": n} or None
    context = JSONField(null=True)


class AutomationRun(BaseModel):
    """The log row every run leaves (the flows API's logId)."""

    id = IdField()
    automation = ForeignKeyField(Automation, null=True, backref="runs", on_delete="SET NULL")
    api_key = ForeignKeyField(ApiKey, null=True, backref="runs", on_delete="SET NULL")
    end_user = CharField(max_length=200, null=True)
    dialect = CharField(max_length=20, default="api")
    inputs = JSONField(default=dict)
    outputs = JSONField(default=dict)
    steps = JSONField(default=list)
    status = CharField(max_length=20, default="running")  # running | succeeded | failed
    error = TextField(null=True)
    prompt_length = IntegerField(default=0)
    prompt_tokens = IntegerField(default=0)
    completion_tokens = IntegerField(default=0)
    credits = IntegerField(default=0)
    duration_ms = IntegerField(default=0)
    rating = IntegerField(null=True)
    rating_comment = TextField(null=True)
    created_at = DateTimeField(default=clock.now, index=True)
    finished_at = DateTimeField(null=True)


class Usage(BaseModel):
    """One row per API call of every dialect."""

    id = IdField()
    created_at = DateTimeField(default=clock.now, index=True)
    # Plain ids, not foreign keys: usage outlives the keys and bots it names.
    # an ApiKey id, or "channel:<channel id>" for the channel API
    key_id = CharField(max_length=64, null=True, index=True)
    dialect = CharField(max_length=20)
    category = CharField(max_length=20)
    endpoint = CharField(max_length=200, default="")
    bot_id = CharField(max_length=36, null=True)
    automation_id = CharField(max_length=36, null=True)
    model = CharField(max_length=200, null=True)
    prompt_tokens = IntegerField(default=0)
    completion_tokens = IntegerField(default=0)
    tokens_estimated = BooleanField(default=False)
    credits = IntegerField(default=1)
    status = IntegerField(default=200)
    latency_ms = FloatField(default=0)


class RateLimitState(BaseModel):
    """GCRA state per key and API category, shared by every worker."""

    key_id = CharField(max_length=64)  # same subjects as Usage.key_id
    category = CharField(max_length=20)
    tat = DoubleField(default=0)  # theoretical arrival time, epoch seconds (needs double precision)

    class Meta:
        primary_key = False
        indexes = ((("key_id", "category"), True),)


class CreditCounter(BaseModel):
    """Credits of a subject in a calendar month (UTC): the settled cost of its calls plus the
    reservations of calls in flight. The monthly quota is checked against it in one conditional
    statement; usage rows stay the record that reports are computed from."""

    subject = CharField(max_length=64)  # same subjects as Usage.key_id
    month = IntegerField()  # year * 100 + month
    used = BigIntegerField(default=0)

    class Meta:
        primary_key = False
        indexes = ((("subject", "month"), True),)


class StreamLease(BaseModel):
    """A stream in flight, counted against its subject's concurrent-stream cap until the
    response closes; a lease whose process died stops counting at ``expires_at``."""

    id = CharField(primary_key=True, max_length=36)
    subject = CharField(max_length=64, index=True)
    expires_at = DoubleField()  # epoch seconds (needs double precision)


class ConsoleSession(BaseModel):
    """A signed-in console user: the browser holds the session token (in a signed cookie), the
    server only its SHA-256. The session acts as the admin key it was opened with and ends with
    it (disabled, deleted), after ``CONSOLE_IDLE_TIMEOUT`` without a request, or at
    ``CONSOLE_SESSION_LIFETIME`` (schema version 15)."""

    id = CharField(primary_key=True, max_length=64)  # SHA-256 hex of the session token
    key = ForeignKeyField(ApiKey, backref="console_sessions", on_delete="CASCADE")
    csrf_token = CharField(max_length=64)
    # Messages for the next page (after a redirect): [{"kind", "text", "secret"?}]; a new key's or
    # channel's secret waits here for the one page that shows it, then is gone.
    flash = JSONField(default=list)
    created_at = DateTimeField(default=clock.now)
    last_seen_at = DateTimeField(default=clock.now, index=True)


class DataTable(BaseModel):
    """A structured table (Database API): typed fields, records, attached to bots.

    ``spec`` (column ``fields``): ``[{"name", "type": text|number|boolean|date, "searchable"}]``.
    """

    id = IdField()
    name = CharField(max_length=200)
    description = TextField(default="")
    spec = JSONField(default=list, column_name="fields")
    created_at = DateTimeField(default=clock.now)
    updated_at = DateTimeField(default=clock.now)

    class Meta:
        table_name = "data_table"


class BotTable(BaseModel):
    """Which tables a bot answers from."""

    bot = ForeignKeyField(Bot, backref="table_links", on_delete="CASCADE")
    table = ForeignKeyField(DataTable, backref="bot_links", on_delete="CASCADE")

    class Meta:
        table_name = "bot_data_table"
        indexes = ((("bot", "table"), True),)


class DataRecord(BaseModel):
    """One record of a table: ``values`` ({field name: value}) and ``search_text``, the
    lower-case text of its searchable fields (what a bot's turn matches the question against)."""

    id = IdField()
    table = ForeignKeyField(DataTable, backref="records", on_delete="CASCADE", index=False)
    values = JSONField(default=dict)
    search_text = TextField(default="")
    # the key of the record's entry in SQLite's word index (app.storage.record_index)
    seq = IntegerField(null=True, unique=True)
    created_at = DateTimeField(default=clock.now)
    updated_at = DateTimeField(default=clock.now)

    class Meta:
        table_name = "data_record"
        # lists page by (table, id); ids are time-ordered
        indexes = ((("table", "id"), True),)


class DataValue(BaseModel):
    """One value of a record, as filters find it (``app.storage.record_index``): a number or
    boolean in ``num``, text or a date (its first ``PREFIX`` characters) in ``txt``."""

    record = ForeignKeyField(DataRecord, on_delete="CASCADE", index=False)
    table_id = CharField(max_length=36)
    field = CharField(max_length=64)
    num = DoubleField(null=True)
    txt = TextField(null=True)

    class Meta:
        table_name = "data_value"
        indexes = ((("table_id", "field", "num", "txt"), False), (("record",), False))


ALL_MODELS = [
    SchemaVersion,
    Bot,
    Channel,
    ApiKey,
    EndUser,
    Conversation,
    Message,
    GenerationStop,
    StoredResponse,
    KnowledgeSource,
    BotSource,
    Tag,
    KnowledgeRow,
    RowTag,
    KnowledgeChunk,
    Automation,
    AutomationStep,
    AutomationRun,
    Usage,
    RateLimitState,
    CreditCounter,
    StreamLease,
    ConsoleSession,
    DataTable,
    BotTable,
    DataRecord,
    DataValue,
]
