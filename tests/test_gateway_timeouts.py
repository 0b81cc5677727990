"""The gateway waits for the services bound to GPU upstreams longer than their own timeouts
let them take: past its wait it answers 504 itself while the service goes on (a chat turn is
still recorded, so a client that retries the 504 says it twice)."""

import re
from pathlib import Path

from avatar_chat.settings import ChatSettings
from avatar_tts.settings import TtsSettings

RULES = Path(__file__).resolve().parents[1] / "gateway/traefik/dynamic/rules.yml"


def upstream_bound_wait_s() -> float:
    transport = RULES.read_text().split("upstream-bound:", 1)[1]
    found = re.search(r"responseHeaderTimeout:\s*(\d+)s", transport)
    assert found, "the upstream-bound transport names its responseHeaderTimeout in seconds"
    return float(found.group(1))


def default(settings: type, name: str) -> float:
    value = settings.model_fields[name].default
    assert isinstance(value, float)
    return value


def test_the_gateway_waits_for_a_chat_reply_longer_than_its_slowest_steps_take():
    # Before its first byte a reply may summarize, wait for a slot, be written, and (not
    # streamed) be spoken.
    steps = ("summary_timeout_s", "llm_queue_wait_s", "llm_total_timeout_s", "tts_timeout_s")
    assert upstream_bound_wait_s() > sum(default(ChatSettings, step) for step in steps)


def test_the_gateway_waits_for_speech_longer_than_the_speech_server_may_take():
    assert upstream_bound_wait_s() > default(TtsSettings, "tts_timeout_s")
