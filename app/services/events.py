"""The events of a chat turn. Every dialect renders these same events.

A turn yields ``Start``, then ``Delta`` (text) any number of times, possibly
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


@dataclass
class Delta:
    text: str


@dataclass
class Heartbeat:
    pass


@dataclass
class Done:
    message_id: str
    content: str
    usage: Usage
    finish_reason: str  # "stop" | "length" | "stopped" (stopped by request or time limit)
    status: str  # "complete" | "incomplete"
    citations: list = field(default_factory=list)


@dataclass
class Error:
    error: ApiError
    message_id: str
    content: str = ""
