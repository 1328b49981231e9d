"""The events of a chat turn. Every dialect renders these same events.

A turn yields ``Start``, then ``Delta`` (text; tool-call fragments, logprobs and
other choices when the request asked for them) any number of times, possibly
``Heartbeat`` (nothing to say yet; SSE renderers send a comment), and ends
with exactly one ``Done`` or ``Error``. A turn cut short by the client
simply stops (the service still saves the partial answer).
"""
from dataclasses import dataclass, field
from typing import Optional

from app.errors import ApiError
from app.providers.llm import Usage


@dataclass
class Start:
    conversation_id: Optional[str]
    user_message_id: Optional[str]
    assistant_message_id: str
    model: str
    created: float


@dataclass(slots=True)  # one per token: slots make it as cheap to build as a one-field class
class Delta:
    """Text of the first choice; or, from a provider's ``Chunk``, any choice's text, tool-call
    fragments (``{"index", "id", "name", "arguments"}``), logprobs and finish reason."""

    text: str
    index: int = 0
    tool_calls: Optional[list] = None
    logprobs: Optional[list] = None
    finish_reason: Optional[str] = None


@dataclass
class Heartbeat:
    pass


@dataclass
class Choice:
    """One whole answer: its text, its tool calls (``[{"id", "type": "function", "function":
    {"name", "arguments"}}]`` or None), its logprobs (OpenAI ``content`` entries or None) and
    why it ended."""

    index: int
    content: str
    tool_calls: Optional[list] = None
    logprobs: Optional[list] = None
    finish_reason: str = "stop"  # "stop" | "length" | "tool_calls" | "content_filter" | "stopped"


@dataclass
class Done:
    """The end of a turn. ``content``, ``tool_calls`` and ``finish_reason`` are the first
    choice's; ``choices`` has every choice (one unless the request asked for ``n``)."""

    message_id: str
    content: str
    usage: Usage
    finish_reason: str  # "stop" | "length" | "tool_calls" | "stopped" (by request or time limit)
    status: str  # "complete" | "incomplete"
    citations: list = field(default_factory=list)
    tool_calls: Optional[list] = None
    choices: list = field(default_factory=list)


@dataclass
class Error:
    error: ApiError
    message_id: str
    content: str = ""
