"""Configuration defaults.

Layering (see ``create_app``): these defaults, then ``instance/config.py``,
then ``CHATPORT_*`` environment variables (values parsed as JSON when they
can be), then the ``test_config`` mapping.
"""

DEFAULTS = {
    "INSTANCE_NAME": "chatport",
    # None means a SQLite file ``chatport.db`` in the instance folder.
    "DATABASE_URL": None,
    # A folder of plain ``*.py`` provider plugins, loaded besides the entry points (each module
    # a plugin named by its file stem). None means ``plugins/`` in the instance folder; a
    # relative path is relative to the instance folder.
    "PLUGINS_DIR": None,
    # Checked before any work is done: a larger body is a 413.
    "MAX_CONTENT_LENGTH": 2 * 1024 * 1024,
    # The model-facing faces (/v1/chat/completions, /v1/responses, /v1/messages...) take
    # larger bodies: inline images and files (each at most MAX_IMAGE_BYTES, decoded).
    "MODEL_MAX_CONTENT_LENGTH": 20 * 1024 * 1024,
    # Seconds a request's body may take to arrive (from when its headers were read; 0: no
    # bound): past it the request is a 408 and its connection is closed.
    "BODY_READ_TIMEOUT": 30,
    # Deepest nesting of arrays and objects a JSON body may have: deeper is a 400.
    "JSON_MAX_DEPTH": 64,
    # An admin key accepted from the environment (stored hashed like any other).
    "ADMIN_KEY": None,
    # Write ``last_used_at`` at most once per this many seconds per key.
    "KEY_LAST_USED_INTERVAL": 60,
    # Seconds a worker reuses an API key it looked up (0: look it up on every request). A key
    # disabled, re-scoped or deleted is dropped at once by the worker that changed it and
    # within this many seconds by the others.
    "KEY_CACHE_SECONDS": 1.0,
    # SQLite: milliseconds a writer waits for the lock before failing.
    "SQLITE_BUSY_TIMEOUT_MS": 5000,
    # SQLite: NORMAL loses nothing on a process crash; FULL also survives power loss.
    "SQLITE_SYNCHRONOUS": "NORMAL",
    # Upgrade the schema in place when the app starts.
    "AUTO_UPGRADE": True,
    # Page size when a list call asks for none, and the largest it may ask for (``limit``; the
    # chat API's ``size``); see app/storage/pagination.py.
    "PAGE_DEFAULT": 10,
    "PAGE_MAX": 100,
    # Bounds on what a request may send, read on each request: characters in a name, in a bot's
    # instructions and in one message; messages in one call; properties an end user has.
    "MAX_NAME_LENGTH": 200,
    "MAX_INSTRUCTIONS_LENGTH": 32000,
    "MAX_MESSAGE_LENGTH": 32000,
    "MAX_MESSAGES": 200,
    # Messages beyond text (tools, images: app/services/messages.py): content parts per message,
    # decoded bytes of one image sent inline (a data: URL), function tools per request and the
    # JSON size of their definitions, and choices a request may ask for (n).
    "MAX_CONTENT_PARTS": 64,
    "MAX_IMAGE_BYTES": 5 * 1024 * 1024,
    "MAX_TOOLS": 128,
    "MAX_TOOLS_BYTES": 256 * 1024,
    "MAX_CHOICES": 8,
    "MAX_PROPERTIES": 50,
    "MAX_AUTOMATION_INPUTS": 50,
    # Credits per 1,000 tokens per model ("*" = default); see app/metering/credits.py.
    "MODEL_PRICES": {"*": {"prompt": 1, "completion": 1}},
    # Aliases: {"fast": "openai/gpt-4o-mini"}.
    "MODEL_ALIASES": {},
    # Chat turns: history window (messages, approximate tokens), whole-prompt bound,
    # longest a stream may run, how often a running turn checks for a stop request,
    # seconds of silence before an SSE heartbeat comment. `chatport serve` also gives gunicorn
    # STREAM_TIMEOUT as its graceful timeout; `serve --stream-timeout` overrides the setting.
    "HISTORY_MAX_MESSAGES": 20,
    "HISTORY_MAX_TOKENS": 4000,
    "PROMPT_MAX_TOKENS": 16000,
    "STREAM_TIMEOUT": 600,
    "STOP_POLL_INTERVAL": 0.5,
    "SSE_HEARTBEAT": 15,
    # Rate-limit plans: requests per minute per API category ("*" = every category).
    # A key uses its own plan or DEFAULT_PLAN; its rate_limits override single categories.
    "RATE_LIMIT_PLANS": {"default": {}, "free": {"*": 3}},
    "DEFAULT_PLAN": "default",
    # The channel API's secret is its key: plan and monthly credits per channel.
    "CHANNEL_PLAN": None,
    "CHANNEL_CREDIT_QUOTA": None,
    # Chat streams a client key (or a channel) may have open at once, across workers (None: no
    # cap; admin keys have none). One more is a 429.
    "MAX_CONCURRENT_STREAMS_PER_KEY": 20,
    # Model used by new bots when none is given.
    "DEFAULT_MODEL": "echo/echo",
    # The echo provider: honour ``[echo tokens=N delay=S]`` in a message (any key that may use
    # echo could otherwise ask for long, slow replies); every echo reply has at most
    # ECHO_MAX_TOKENS tokens, at most ECHO_MAX_DELAY seconds between two, and ends after
    # ECHO_MAX_DURATION seconds.
    "ECHO_DIRECTIVES": False,
    "ECHO_MAX_TOKENS": 1000,
    "ECHO_MAX_DELAY": 0.5,
    "ECHO_MAX_DURATION": 30,
    # Provider plugins (see README "Providers"). Keys and URLs fall back to the
    # usual OPENAI_API_KEY / OPENAI_BASE_URL / ANTHROPIC_* environment variables.
    # *_MODELS: ids to register (None: a default list when a key is set).
    # Networks (CIDRs) a provider base URL may resolve into besides public addresses, e.g.
    # ["127.0.0.0/8"] for Ollama or vLLM on this machine; loopback, private and link-local
    # addresses are refused otherwise (the call fails with provider_unavailable, 502).
    "PROVIDER_ALLOWED_NETWORKS": [],
    # The HTTP client under the provider SDKs (app/providers/http_transport.py): "fast"
    # (llhttp-parsed, bounded) or "httpx" (httpx's own transport, with the same bounds).
    "PROVIDER_HTTP_CLIENT": "fast",
    # What a provider reply may make chatport buffer: its head, a non-streamed body (a larger
    # declared Content-Length or chunk is refused unread), a line of an event stream.
    "PROVIDER_MAX_HEAD": 65536,
    "PROVIDER_MAX_BODY": 16 * 1024 * 1024,
    "PROVIDER_MAX_LINE": 1024 * 1024,
    # Seconds: a non-streamed call's whole reply, retries included (provider_timeout, 504,
    # past it); a streamed call's response head; the longest wait between lines of a stream.
    "PROVIDER_DEADLINE": 120,
    "PROVIDER_FIRST_BYTE_TIMEOUT": 60,
    "PROVIDER_STREAM_IDLE": 60,
    # Idle connections to a provider are dropped after this many seconds; at most this many
    # are open per host (a request beyond waits for one, up to the read timeout).
    "PROVIDER_KEEPALIVE_EXPIRY": 30,
    "PROVIDER_POOL_MAX_PER_HOST": 1000,
    "OPENAI_API_KEY": None,
    "OPENAI_BASE_URL": None,
    "OPENAI_MODELS": None,
    "OPENAI_CONNECT_TIMEOUT": 5,
    "OPENAI_READ_TIMEOUT": 60,  # longest silence while reading a reply
    "OPENAI_MAX_RETRIES": 1,  # connection errors and 5xx, before a stream starts; never 429
    # More OpenAI-compatible servers: {"ollama": {"base_url": ..., "models": [...]}}.
    "OPENAI_COMPATIBLE": {},
    "ANTHROPIC_API_KEY": None,
    "ANTHROPIC_BASE_URL": None,
    "ANTHROPIC_MODELS": None,
    "ANTHROPIC_MAX_TOKENS": 1024,  # the Messages API requires max_tokens
    "ANTHROPIC_CONNECT_TIMEOUT": 5,
    "ANTHROPIC_READ_TIMEOUT": 60,
    "ANTHROPIC_MAX_RETRIES": 1,
    # Knowledge: characters stored per instance (None = no limit) and per row.
    "KNOWLEDGE_MAX_CHARS": 50_000_000,
    "KNOWLEDGE_MAX_ROW_CHARS": 1_000_000,
    # URL sources: largest page (bytes, after decompression), seconds for the whole fetch (one
    # deadline for connecting, every redirect and the body), networks allowed besides public
    # addresses (e.g. ["127.0.0.0/8"]); loopback, private and link-local addresses are refused otherwise.
    "KNOWLEDGE_URL_MAX_BYTES": 2_000_000,
    "KNOWLEDGE_URL_TIMEOUT": 10,
    "KNOWLEDGE_URL_ALLOWED_NETWORKS": [],
    # Seconds between checks for sources whose sync interval is due (0: only `chatport knowledge sync-due`).
    "KNOWLEDGE_SYNC_DUE_INTERVAL": 60,
    # Database API (docs/databases.md): tables per instance, fields per table, records per table,
    # bytes of one record's values (as JSON), and an import's body (bytes) and lines.
    "DATABASE_MAX_TABLES": 100,
    "DATABASE_MAX_FIELDS": 50,
    "DATABASE_MAX_RECORDS": 100_000,
    "DATABASE_MAX_RECORD_BYTES": 16_384,
    "DATABASE_IMPORT_MAX_BYTES": 20 * 1024 * 1024,
    "DATABASE_IMPORT_MAX_LINES": 100_000,
    # Records a bot's turn gives the model (those matching the question best), 0: none.
    "DATABASE_TURN_RECORDS": 3,
    # The lookup tool (a bot's knowledge.tables_tool): the most rounds of tool calls in one turn
    # before the model must answer, and the most records one call returns.
    "DATABASE_TOOL_ROUNDS": 3,
    "DATABASE_TOOL_RECORDS": 10,
    # Model of chatbots created through the chat API's create-chatbot.
    "CHAT_API_MODEL": "extractive/extractive",
    # Mount points of the dialects.
    "API_PREFIX": "/api/v1",
    "CHANNEL_API_PREFIX": "/api/public/channels",
    "OPENAI_PREFIX": "/v1",
    # Automation prompt templates: the most characters one step's rendered prompt (or any value
    # its template builds) may have, and the most seconds its rendering may take; past either
    # the run fails with a 400 naming the step. None: no bound.
    "TEMPLATE_MAX_OUTPUT": 1_000_000,
    "TEMPLATE_TIMEOUT": 2,
    # Automation endpoints: POST <HOOKS_PREFIX>/<endpoint>; "" mounts them at the root.
    "HOOKS_PREFIX": "/hooks",
    # The console at /console (and / redirecting there); False: neither is served.
    "CONSOLE_ENABLED": True,
    # Signs the console's session cookie. None: the instance folder's ``secret_key`` file, which
    # `chatport init` writes (or the first start, when init never ran).
    "SECRET_KEY": None,
    # Seconds without a request after which a console session ends, and the longest a session
    # lasts however busy it is.
    "CONSOLE_IDLE_TIMEOUT": 30 * 60,
    "CONSOLE_SESSION_LIFETIME": 12 * 3600,
    # Sign-in attempts per minute per client address (GCRA, like the API's rate limits).
    "CONSOLE_SIGNIN_PER_MINUTE": 10,
    # The session cookie's Secure flag: None sets it when the request came over HTTPS (gunicorn
    # honours X-Forwarded-Proto from FORWARDED_ALLOW_IPS, by default 127.0.0.1); True always.
    "CONSOLE_COOKIE_SECURE": None,
    # Reverse proxies in front of chatport that append to X-Forwarded-For (and set
    # X-Forwarded-Proto): with N, the client address is the Nth from the right of that header
    # (Werkzeug's ProxyFix). 0 trusts no header: the address is the connection's.
    "PROXY_HOPS": 0,
    # Log lines on stderr: "text" (time, level, logger, [request id], message) or "json" (one
    # object a line); see docs/operating.md.
    "LOG_FORMAT": "text",
    # One access line per request (when its response closes): None writes it with LOG_FORMAT=json.
    "ACCESS_LOG": None,
    # A bearer token that may read GET /metrics besides admin keys (None: admin keys only).
    "METRICS_TOKEN": None,
}


POSITIVE_INTEGERS = ("PAGE_DEFAULT", "PAGE_MAX", "MAX_NAME_LENGTH", "MAX_INSTRUCTIONS_LENGTH",
                     "MAX_MESSAGE_LENGTH", "MAX_MESSAGES", "MAX_PROPERTIES", "MAX_CONTENT_PARTS",
                     "MAX_IMAGE_BYTES", "MAX_TOOLS", "MAX_TOOLS_BYTES", "MAX_CHOICES",
                     "CONSOLE_IDLE_TIMEOUT", "CONSOLE_SESSION_LIFETIME", "CONSOLE_SIGNIN_PER_MINUTE",
                     "DATABASE_MAX_TABLES", "DATABASE_MAX_FIELDS", "DATABASE_MAX_RECORDS",
                     "DATABASE_MAX_RECORD_BYTES", "DATABASE_IMPORT_MAX_BYTES", "DATABASE_IMPORT_MAX_LINES",
                     "DATABASE_TOOL_ROUNDS", "DATABASE_TOOL_RECORDS")
COUNTS = ("PROXY_HOPS",)


def check(config):
    """Raise ValueError naming a bound the server cannot honour as configured.

    ``MAX_NAME_LENGTH`` may not exceed the width of the database's name columns (200).
    """
    for names, least, kind in ((POSITIVE_INTEGERS, 1, "a positive integer"),
                               (COUNTS, 0, "an integer of 0 or more")):
        for name in names:
            value = config.get(name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be {kind}, not {value!r}")
    if config["PAGE_DEFAULT"] > config["PAGE_MAX"]:
        raise ValueError(f"PAGE_DEFAULT ({config['PAGE_DEFAULT']}) must not exceed PAGE_MAX ({config['PAGE_MAX']})")
    from app.storage.models import ApiKey, Automation, Bot, Channel, KnowledgeSource

    width = min(m.name.max_length for m in (ApiKey, Automation, Bot, Channel, KnowledgeSource))
    if config["MAX_NAME_LENGTH"] > width:
        raise ValueError(f"MAX_NAME_LENGTH ({config['MAX_NAME_LENGTH']}) must not exceed {width}, "
                         "the width of the database's name columns")
