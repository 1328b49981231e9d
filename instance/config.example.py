# Copy to instance/config.py and edit. CHATPORT_<NAME> environment variables override these.
INSTANCE_NAME = "chatport"
# DATABASE_URL = "postgresql://chatport@127.0.0.1:5432/chatport"
# OPENAI_API_KEY = "sk-..."
# OPENAI_MODELS = ["gpt-4o-mini"]
# MODEL_ALIASES = {"fast": "openai/gpt-4o-mini"}
# MAX_CONTENT_LENGTH = 2 * 1024 * 1024
