"""Built-in ``extractive`` provider: answers from retrieved knowledge, no LLM needed.

The answer is the sentences of the best passage that share the most words
with the question (trimmed to ``EXTRACTIVE_MAX_CHARS``), streamed word by
word; with no passage, ``EXTRACTIVE_FALLBACK``. It is the demo bot's model
when no LLM credentials are configured. It honours ``stop``; tools, images, response formats,
``n`` and logprobs are refused (a 400 naming the field).
"""
import re

from app.providers import Model, Usage, content_text, hookimpl, message_tokens

WORD = re.compile(r"\w+")
SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
STOP = set("a an the is are was were be of to in on for and or what who how why when where which "
           "do does did can could i you it this that with about tell me my your".split())


def _words(text):
    return {w for w in WORD.findall(text.lower()) if w not in STOP}


def best_answer(question, passages, max_chars=600):
    """The most relevant sentences of the best passages, or None."""
    wanted = _words(question)
    best, best_score = None, 0
    for rank, passage in enumerate(passages):
        sentences = [s.strip(" #*-\t") for s in SENTENCE.split(passage["content"]) if s.strip(" #*-\t")]
        for i, sentence in enumerate(sentences):
            score = len(wanted & _words(sentence)) - rank * 0.01 - i * 0.001
            if score > best_score:
                best, best_score = (sentences, i), score
    if best is None:
        return None
    sentences, i = best
    answer = sentences[i]
    for extra in sentences[i + 1:]:  # keep the following sentence(s) while there is room
        if len(answer) + 1 + len(extra) > max_chars:
            break
        answer += " " + extra
        if len(answer) > max_chars // 2:
            break
    return answer[:max_chars]


class ExtractiveModel(Model):
    provider = "extractive"
    model_id = "extractive"
    description = "Answers with the most relevant sentences of the bot's knowledge; no LLM."

    def __init__(self, config):
        self.fallback = config.get("EXTRACTIVE_FALLBACK") or "I don't know that yet: nothing in my knowledge matches."
        self.max_chars = int(config.get("EXTRACTIVE_MAX_CHARS") or 600)

    def stream(self, request):
        question = next((content_text(m["content"]) for m in reversed(request.messages) if m["role"] == "user"), "")
        answer = best_answer(question, request.extra.get("passages") or [], self.max_chars) or self.fallback
        for stop in request.stop or ():  # the answer ends before the first stop sequence
            if stop and stop in answer:
                answer = answer[:answer.index(stop)]
        words = answer.split(" ")
        limit = request.max_tokens or len(words)
        for i, word in enumerate(words[:limit]):
            yield word if i == 0 else " " + word
        prompt = sum(message_tokens(m) for m in request.messages)
        yield Usage(prompt_tokens=prompt, completion_tokens=min(limit, len(words)))


@hookimpl
def register_models(register, config):
    register(ExtractiveModel(config))
