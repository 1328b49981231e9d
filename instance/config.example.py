# Copy to instance/config.py and edit. CHATPORT_<NAME> environment variables override these.
INSTANCE_NAME = "chatport"
# DATABASE_URL = "postgresql://chatport@127.0.0.1:5432/chatport"
# OPENAI_API_KEY = "sk-..."
# OPENAI_MODELS = ["gpt-4o-mini"]
# A local OpenAI-compatible server (Ollama, vLLM, llama.cpp): its network must be allowed, since
# provider base URLs on loopback or private addresses are refused otherwise.
# OPENAI_COMPATIBLE = {"ollama": {"base_url": "http://127.0.0.1:11434/v1", "models": ["llama3.2"]}}
# PROVIDER_ALLOWED_NETWORKS = ["127.0.0.0/8"]
# MODEL_ALIASES = {"fast": "openai/gpt-4o-mini"}
# MAX_CONTENT_LENGTH = 2 * 1024 * 1024
