"""Account: what this instance is, what it holds, and its limits."""
from app import __version__
from app.storage.models import ApiKey, Automation, Bot, Channel, Conversation, EndUser, KnowledgeSource, Message


def account_info(config):
    return {
        "instance": config["INSTANCE_NAME"],
        "version": __version__,
        "counts": {
            "bots": Bot.select().count(),
            "channels": Channel.select().count(),
            "api_keys": ApiKey.select().count(),
            "users": EndUser.select().count(),
            "conversations": Conversation.select().count(),
            "messages": Message.select().count(),
            "knowledge_sources": KnowledgeSource.select().count(),
            "automations": Automation.select().count(),
        },
        "limits": {
            "max_content_length": config["MAX_CONTENT_LENGTH"],
            "page_max": config["PAGE_MAX"],
            "max_message_length": config["MAX_MESSAGE_LENGTH"],
            "max_messages": config["MAX_MESSAGES"],
            "max_name_length": config["MAX_NAME_LENGTH"],
        },
    }
