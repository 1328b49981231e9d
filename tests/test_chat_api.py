"""The chat API dialect (docs/chat-api.md), with the hosted API's own client examples."""
import contextlib
import io
import json
import subprocess
import time

import pytest
import requests

from app.storage.db import db
from app.storage.models import Conversation, KnowledgeSource, Message

from .conftest import Api, create_key
from .servers import chatport_server
from .test_mgmt_api import snapshot

ADMIN = "cp_chat_api_tests_admin_key_000000000000000000"
SOURCE_TEXT = ("Chatzuri is an AI chatbot builder that lets you create a GPT-based chatbot that knows data. "
               "Chatzuri was founded in 2023. Its office is in Nairobi.")


def run_spec_python(code):
    """Run a snippet from the spec as it is and return what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<spec example>", "exec"), {})
    return out.getvalue()


# The spec's Python examples, verbatim but for the URL, the key and the chatbotId.
SPEC_NON_STREAM = '''
import requests
import json
url = 'URL/api/v1/chat'
headers = {
'Authorization': 'Bearer KEY',
'Content-Type': 'application/json'
}
data = {
"messages": [
{"content": "How can I help you?", "role": "assistant"},
{"content": "What is chatzuri?", "role": "user"}
],
"chatbotId": "BOT",
"stream": False,
"temperature": 0
}
response = requests.post(url, headers=headers, data=json.dumps(data))
json_data = response.json()
if response.status_code == 200:
  print("response:", json_data['text'])
else:
  print('Error:' + json_data['message'])
'''

SPEC_STREAM = '''
import requests
import json
url = 'URL/api/v1/chat'
headers = {
'Authorization': 'Bearer KEY',
'Content-Type': 'application/json'
}
data = {
"messages": [
{"content": "How can I help you?", "role": "assistant"},
{"content": "What is chatzuri?", "role": "user"}
],
"chatbotId": "BOT",
"stream": True,
"temperature": 0
}
response = requests.post(url, headers=headers, data=json.dumps(data), stream=True)
if response.status_code != 200:
  json_data = response.json()
  print('Error:' + json_data['message'])
else:
  decoder = response.iter_content(chunk_size=None)
  for chunk in decoder:
    chunk_value = chunk.decode('utf-8')
    print(chunk_value, end='', flush=True)
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with chatport_server(tmp_path_factory.mktemp("chatapi"), env={"CHATPORT_ADMIN_KEY": ADMIN}) as base:
        yield base


@pytest.fixture(scope="module")
def chatbot(server):
    resp = requests.post(server + "/api/v1/create-chatbot", headers={"Authorization": f"Bearer {ADMIN}"},
                         json={"chatbotName": "Chatzuri helper", "sourceText": SOURCE_TEXT}, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()["chatbotId"]


def _spec(code, server, key, bot):
    return code.replace("URL", server).replace("KEY", key).replace("BOT", bot)


def test_spec_python_example_non_streaming(server, chatbot):
    printed = run_spec_python(_spec(SPEC_NON_STREAM, server, ADMIN, chatbot))
    assert printed.startswith("response: ")
    assert "AI chatbot builder" in printed  # answered from sourceText by the extractive model


def test_spec_python_example_streaming_is_progressive(server, chatbot):
    printed = run_spec_python(_spec(SPEC_STREAM, server, ADMIN, chatbot))
    assert "AI chatbot builder" in printed and not printed.startswith("Error")
    # progressive: chunks arrive one after another over time, not in one body
    bot = requests.post(server + "/api/v1/create-chatbot", headers={"Authorization": f"Bearer {ADMIN}"},
                        json={"chatbotName": "slow"}, timeout=10).json()["chatbotId"]
    requests.post(server + "/api/v1/update-chatbot-settings", headers={"Authorization": f"Bearer {ADMIN}"},
                  json={"chatbotId": bot, "model": "echo/echo"}, timeout=10)
    resp = requests.post(server + "/api/v1/chat", headers={"Authorization": f"Bearer {ADMIN}"}, stream=True,
                         json={"chatbotId": bot, "stream": True,
                               "messages": [{"role": "user", "content": "[echo tokens=10 delay=0.05]"}]}, timeout=10)
    assert resp.headers["Content-Type"].startswith("text/plain")
    arrivals, text = [], ""
    for chunk in resp.iter_content(chunk_size=None):
        arrivals.append(time.monotonic())
        text += chunk.decode()
    assert text == " ".join(f"t{i}" for i in range(1, 11))
    assert len(arrivals) >= 5 and arrivals[-1] - arrivals[0] > 0.2


def test_spec_error_branch_prints_message(server, chatbot):
    printed = run_spec_python(_spec(SPEC_NON_STREAM, server, "cp_wrong_key", chatbot))
    assert printed.startswith("Error:") and "API key" in printed
    printed = run_spec_python(_spec(SPEC_STREAM, server, ADMIN, "unknown-bot"))
    assert printed.startswith("Error:") and "not found" in printed


def test_spec_curl_example(server, chatbot):
    body = json.dumps({"messages": [{"content": "How can I help you?", "role": "assistant"},
                                    {"content": "What is chatzuri?", "role": "user"}],
                       "chatbotId": chatbot, "stream": False, "temperature": 0})
    out = subprocess.run(["curl", "-s", server + "/api/v1/chat", "-H", f"Authorization: Bearer {ADMIN}",
                          "-d", body], capture_output=True, text=True, timeout=20).stdout
    assert "AI chatbot builder" in json.loads(out)["text"]


# ------------------------------------------------------------ in-process (both databases)


@pytest.fixture
def chatapi(admin):
    return admin


def _chat(api, bot, content="What is chatzuri?", **kw):
    return api.post("/api/v1/chat", json={"chatbotId": bot, "messages": [{"role": "user", "content": content}], **kw})


def test_create_update_and_answer_from_source_text(app, chatapi):
    bot = chatapi.post("/api/v1/create-chatbot", json={"chatbotName": "Zuri", "sourceText": SOURCE_TEXT}).get_json()
    answer = _chat(chatapi, bot["chatbotId"], "When was Chatzuri founded?").get_json()["text"]
    assert "2023" in answer
    resp = chatapi.post("/api/v1/update-chatbot-data", json={"chatbotId": bot["chatbotId"], "chatbotName": "Zuri 2",
                                                             "sourceText": "Penguins live in Antarctica."})
    assert resp.status_code == 200
    assert "Antarctica" in _chat(chatapi, bot["chatbotId"], "Where do penguins live?").get_json()["text"]
    assert "2023" not in _chat(chatapi, bot["chatbotId"], "When was Chatzuri founded?").get_json()["text"]
    with app.app_context(), db.connection_context():
        assert KnowledgeSource.select().where(KnowledgeSource.type == "TEXT").count() == 1
    listed = chatapi.get("/api/v1/get-chatbots").get_json()["chatbots"]["data"]
    assert [b["name"] for b in listed] == ["Zuri 2"]
    settings = chatapi.post("/api/v1/update-chatbot-settings", json={
        "chatbotId": bot["chatbotId"], "instructions": "Be short.", "model": "echo/echo", "temperature": 0.5})
    assert settings.status_code == 200
    assert _chat(chatapi, bot["chatbotId"], "hi").get_json()["text"] == "Echo: hi"
    deleted = chatapi.delete(f"/api/v1/delete-chatbot?chatbotId={bot['chatbotId']}")
    assert deleted.status_code == 200
    assert chatapi.delete("/api/v1/delete-chatbot", json={"chatbotId": bot["chatbotId"]}).status_code == 404
    with app.app_context(), db.connection_context():
        assert KnowledgeSource.select().count() == 0


def test_conversation_id_saves_last_message_and_reply(app, chatapi):
    bot = chatapi.post("/api/v1/create-chatbot", json={"chatbotName": "Saver"}).get_json()["chatbotId"]
    chatapi.post("/api/v1/update-chatbot-settings", json={"chatbotId": bot, "model": "echo/echo"})
    assert _chat(chatapi, bot, "not saved").status_code == 200
    history = [{"role": "assistant", "content": "How can I help you?"}, {"role": "user", "content": "first"}]
    r1 = chatapi.post("/api/v1/chat", json={"chatbotId": bot, "messages": history, "conversationId": "my-conv-1"})
    history += [{"role": "assistant", "content": r1.get_json()["text"]}, {"role": "user", "content": "second"}]
    chatapi.post("/api/v1/chat", json={"chatbotId": bot, "messages": history, "conversationId": "my-conv-1"})
    with app.app_context(), db.connection_context():
        assert Conversation.select().count() == 1
        msgs = [(m.role, m.content) for m in Message.select().order_by(Message.created_at, Message.id)]
    assert msgs == [("user", "first"), ("assistant", "Echo: first"), ("user", "second"), ("assistant", "Echo: second")]
    convs = chatapi.get(f"/api/v1/get-conversations?chatbotId={bot}").get_json()
    assert convs["total"] == 1 and convs["data"][0]["id"] == "my-conv-1"
    assert len(convs["data"][0]["messages"]) == 4
    assert chatapi.get(f"/api/v1/get-conversations?chatbotId={bot}&startDate=2999-01-01").get_json()["total"] == 0
    assert chatapi.get(f"/api/v1/get-conversations?chatbotId={bot}&endDate=2999-01-01").get_json()["total"] == 1
    other = chatapi.post("/api/v1/create-chatbot", json={"chatbotName": "Other"}).get_json()["chatbotId"]
    taken = chatapi.post("/api/v1/chat", json={"chatbotId": other, "messages": history, "conversationId": "my-conv-1"})
    assert taken.status_code == 400 and "Echo" not in taken.get_data(as_text=True)


def test_errors_in_chat_api_shape(app, client, chatapi):
    bot = chatapi.post("/api/v1/create-chatbot", json={"chatbotName": "E"}).get_json()["chatbotId"]
    before = snapshot(app)
    cases = [
        (Api(client).post("/api/v1/chat", json={"chatbotId": bot, "messages": []}), 401),
        (Api(client, "cp_nope").post("/api/v1/chat", json={}), 401),
        (_chat(chatapi, "missing-bot"), 404),
        (chatapi.post("/api/v1/chat", json={"chatbotId": bot}), 400),
        (chatapi.post("/api/v1/chat", json={"chatbotId": bot, "messages": []}), 400),
        (chatapi.post("/api/v1/chat", json={"chatbotId": bot, "messages": [{"role": "robot", "content": "x"}]}), 400),
        (chatapi.post("/api/v1/chat", json={"chatbotId": bot, "messages": [{"role": "assistant", "content": "x"}]}), 400),
        (_chat(chatapi, bot, temperature=2.5), 400),
        (_chat(chatapi, bot, temperature="warm"), 400),
        (_chat(chatapi, bot, model="openai/gpt-4"), 400),
        (_chat(chatapi, bot, "x" * (app.config["MAX_MESSAGE_LENGTH"] + 1)), 400),
        (chatapi.post("/api/v1/chat", data="{oops", headers={"Content-Type": "application/json"}), 400),
        (chatapi.post("/api/v1/create-chatbot", json={}), 400),
        (chatapi.post("/api/v1/update-chatbot-data", json={"chatbotId": "nope", "chatbotName": "x"}), 404),
        (chatapi.post("/api/v1/update-chatbot-settings", json={"chatbotId": bot, "model": "nope/x"}), 400),
        (chatapi.delete("/api/v1/delete-chatbot"), 400),
        (chatapi.get("/api/v1/get-conversations"), 400),
        (chatapi.get(f"/api/v1/get-conversations?chatbotId={bot}&startDate=yesterday"), 400),
        (chatapi.get("/api/v1/chat"), 405),
    ]
    for resp, status in cases:
        assert resp.status_code == status, (status, resp.get_data(as_text=True))
        body = resp.get_json()
        assert set(body) == {"message"} and body["message"], body
    assert snapshot(app) == before
    client_key = Api(client, create_key(app, kind="client"))
    assert client_key.post("/api/v1/create-chatbot", json={"chatbotName": "x"}).status_code == 403
    assert _chat(client_key, bot).status_code == 200  # client keys may chat


def test_model_override_allowed(app, chatapi):
    bot = chatapi.post("/api/v1/create-chatbot", json={"chatbotName": "M"}).get_json()["chatbotId"]
    chatapi.patch(f"/api/v1/bots/{bot}", json={"allowed_models": ["echo/echo"]})
    assert _chat(chatapi, bot, "hi", model="echo/echo").get_json()["text"] == "Echo: hi"


def test_get_conversations_asks_the_database_the_same_for_any_page_size(app, chatapi, monkeypatch):
    from datetime import datetime, timedelta

    from app.services import chat
    from app.storage.models import Bot

    bot = chatapi.post("/api/v1/create-chatbot", json={"chatbotName": "Busy"}).get_json()["chatbotId"]
    t0 = datetime(2030, 1, 1)
    with app.app_context(), db.connection_context():
        bot_row = Bot.get_by_id(bot)
        for i in range(50):
            conv = chat.start_conversation(bot_row, conversation_id=f"conv-{i:02d}")
            Conversation.update(created_at=t0 + timedelta(minutes=i)).where(Conversation.id == conv.id).execute()
            for j, role in enumerate(("user", "assistant") * (1 + i % 3)):
                Message.create(conversation=conv, role=role, content=f"{i}.{j}",
                               created_at=t0 + timedelta(minutes=i, seconds=j))
    statements = []
    database = db.obj
    real = database.execute_sql

    def counting(sql, params=None, *args, **kwargs):
        statements.append(sql)
        return real(sql, params, *args, **kwargs)

    monkeypatch.setattr(database, "execute_sql", counting)
    counts = {}
    for size in (1, 1, 50):  # the first request also notes when the key was last used
        statements.clear()
        body = chatapi.get(f"/api/v1/get-conversations?chatbotId={bot}&size={size}").get_json()
        counts[size] = len(statements)
        assert body["total"] == 50 and len(body["data"]) == size
    assert counts[50] == counts[1], counts  # not one more query per conversation
    assert [c["id"] for c in body["data"]] == [f"conv-{i:02d}" for i in reversed(range(50))]
    for conv in body["data"]:
        i = int(conv["id"][5:])
        assert [m["content"] for m in conv["messages"]] == [f"{i}.{j}" for j in range(2 * (1 + i % 3))]
        assert [m["role"] for m in conv["messages"]] == ["user", "assistant"] * (1 + i % 3)
