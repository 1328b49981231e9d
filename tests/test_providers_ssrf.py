"""Provider base URLs on loopback, private, link-local or other non-public addresses are refused
(SSRF) unless the operator allows their network with PROVIDER_ALLOWED_NETWORKS."""
import pytest
import requests

from app import errors
from app.providers import netguard
from app.providers.llm import ChatRequest, ModelRegistry, collect
from tests.fakes import FakeAnthropic, FakeOpenAI

from .servers import chatport_server, upstream_env

HI = ChatRequest(messages=[{"role": "user", "content": "hi"}])


@pytest.fixture
def fake():
    with FakeOpenAI(models=("gpt-test",)) as server:
        yield server


def openai_model(base_url, allowed):
    return ModelRegistry({"OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "sk-test", "OPENAI_MODELS": ["gpt-test"],
                          "OPENAI_MAX_RETRIES": 0, "OPENAI_CONNECT_TIMEOUT": 1,
                          "PROVIDER_ALLOWED_NETWORKS": allowed}).get("openai/gpt-test")


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{port}/v1",        # IPv4 loopback
    "http://localhost:{port}/v1",        # a name that resolves to loopback
    "http://[::1]:{port}/v1",            # IPv6 loopback
    "http://[::ffff:127.0.0.1]:{port}/v1",  # IPv4-mapped IPv6 loopback
    "http://169.254.169.254/v1",         # link-local (cloud metadata)
    "http://10.1.2.3/v1",                # private
    "http://192.168.0.10:8080/v1",       # private
    "http://[fd00::1]/v1",               # IPv6 unique local
    "http://0.0.0.0:{port}/v1",          # unspecified
])
def test_openai_base_url_on_a_non_public_address_is_refused(fake, url):
    model = openai_model(url.format(port=fake.port), allowed=[])
    with pytest.raises(errors.ProviderUnavailable) as exc:
        collect(model.stream(HI))
    assert "PROVIDER_ALLOWED_NETWORKS" in str(exc.value) and "non-public" in str(exc.value)
    assert fake.requests == []  # refused before connecting


def test_allowed_network_is_reached_and_only_that_one(fake):
    text, usage = collect(openai_model(fake.base_url, allowed=["127.0.0.0/8"]).stream(HI))
    assert text and usage.completion_tokens and len(fake.requests) == 1
    # allowing IPv4 loopback does not open IPv6 loopback or private networks
    for url in (f"http://[::1]:{fake.port}/v1", "http://10.0.0.1/v1"):
        with pytest.raises(errors.ProviderUnavailable):
            collect(openai_model(url, allowed=["127.0.0.0/8"]).stream(HI))
    # a comma list (as an environment variable gives it) works too
    text, _ = collect(openai_model(fake.base_url, allowed="10.0.0.0/8, 127.0.0.1/32").stream(HI))
    assert text


def test_anthropic_base_url_on_loopback_is_refused_unless_allowed():
    with FakeAnthropic() as fake:
        def claude(allowed):
            return ModelRegistry({"ANTHROPIC_BASE_URL": fake.url, "ANTHROPIC_API_KEY": "sk-ant-test",
                                  "ANTHROPIC_MODELS": ["claude-test"], "ANTHROPIC_MAX_RETRIES": 0,
                                  "PROVIDER_ALLOWED_NETWORKS": allowed}).get("anthropic/claude-test")

        with pytest.raises(errors.ProviderUnavailable) as exc:
            collect(claude([]).stream(HI))
        assert "PROVIDER_ALLOWED_NETWORKS" in str(exc.value) and fake.requests == []
        text, _ = collect(claude(["127.0.0.0/8"]).stream(HI))
        assert text and len(fake.requests) == 1


def test_default_public_endpoint_is_not_checked():
    # no base URL: the SDK's public endpoint; nothing to refuse (and nothing resolved here)
    from app.providers.helpers import check_base_url

    assert check_base_url("openai", None, {"PROVIDER_ALLOWED_NETWORKS": []}) is None


def test_netguard_rules():
    for url in ("ftp://example.com/x", "http:///nohost", "file:///etc/passwd"):
        with pytest.raises(netguard.RefusedAddress):
            netguard.check_url(url)
    with pytest.raises(netguard.RefusedAddress, match="cannot resolve"):
        netguard.check_url("http://no-such-host.invalid/")
    # URLs whose host parsers disagree on: urllib.parse and httpx see 1.1.1.1, urllib3 127.0.0.1
    for url in ("http://127.0.0.1:1\\@1.1.1.1/", "http://127.0.0.1:1\\\\@1.1.1.1/", "http://a@127.0.0.1:1@1.1.1.1/",
                "http://1.1.1.1@127.0.0.1/", "http://1.1.1.1 /", "http://1.1.1.1\t/", "http://1.1.1.1\n@127.0.0.1/"):
        with pytest.raises(netguard.RefusedAddress, match="backslash|credentials"):
            netguard.check_url(url)
    target = netguard.check_url("http://127.0.0.1:1/", ["127.0.0.0/8"])
    assert (target.host, target.port, target.address) == ("127.0.0.1", 1, "127.0.0.1")
    netguard.check_url("http://[::1]:1/", ["::1/128"])
    with pytest.raises(netguard.RefusedAddress, match="MY_SETTING"):
        netguard.check_url("http://127.0.0.1:1/", ["::1/128"], setting="MY_SETTING")


def test_refused_provider_through_the_server_is_a_502_in_each_dialect(tmp_path, fake):
    admin = "cp_test_admin_key_for_the_ssrf_tests_000000000000"
    env = upstream_env(fake, admin, PROVIDER_ALLOWED_NETWORKS="[]")
    headers = {"Authorization": f"Bearer {admin}"}
    with chatport_server(tmp_path, env=env) as base:
        resp = requests.post(base + "/v1/chat/completions", headers=headers, timeout=10, json={
            "model": "openai/gpt-test", "messages": [{"role": "user", "content": "hi"}]})
        assert resp.status_code == 502 and resp.json()["error"]["code"] == "provider_unavailable", resp.text
        bot = requests.post(base + "/api/v1/bots", headers=headers, timeout=10,
                            json={"name": "b", "model": "openai/gpt-test"}).json()
        conv = requests.post(base + "/api/v1/conversations", headers=headers, timeout=10,
                             json={"bot_id": bot["id"]}).json()
        resp = requests.post(f"{base}/api/v1/conversations/{conv['id']}/messages", headers=headers, timeout=10,
                             json={"content": "hi"})
        assert resp.status_code == 502 and resp.json()["error"] == "provider_unavailable"
        msgs = requests.get(f"{base}/api/v1/conversations/{conv['id']}/messages", headers=headers,
                            timeout=10).json()["data"]
        assert msgs[-1]["status"] == "error" and "PROVIDER_ALLOWED_NETWORKS" in msgs[-1]["error"]
    assert fake.requests == []
