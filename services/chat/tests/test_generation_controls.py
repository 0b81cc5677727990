"""Generation controls on POST /api/chat (top_p, top_k, min_p, repetition_penalty,
presence_penalty, frequency_penalty, seed, stop): each reaches the LLM server under that
server's name, an absent one is not sent, one out of range is a 422 that spends nothing, and a
stop sequence ends the reply before it, streamed or not, against both backends' emulators.
Every turn stops where a line of the user's would begin (`\n{{user}}:`, here the default
user name's), besides what the request adds."""

import pytest

from tests.helpers import returning_visitor

from .helpers import ask, read_events

USERS_LINE = "\nUser:"
DEFAULT_STOP = {"stop": [USERS_LINE]}

# (request field, value, what Ollama's options get, what the OpenAI-compatible body gets)
FIELDS = [
    ("top_p", 0.9, {"top_p": 0.9}, {"top_p": 0.9}),
    ("top_p", 1, {"top_p": 1.0}, {"top_p": 1.0}),
    ("top_k", 40, {"top_k": 40}, {"top_k": 40}),
    # Off: Ollama's 0; vLLM's -1 (older vLLMs refuse 0).
    ("top_k", 0, {"top_k": 0}, {"top_k": -1}),
    ("min_p", 0.05, {"min_p": 0.05}, {"min_p": 0.05}),
    ("repetition_penalty", 1.1, {"repeat_penalty": 1.1}, {"repetition_penalty": 1.1}),
    ("presence_penalty", -0.5, {"presence_penalty": -0.5}, {"presence_penalty": -0.5}),
    ("frequency_penalty", 2, {"frequency_penalty": 2.0}, {"frequency_penalty": 2.0}),
    ("seed", 42, {"seed": 42}, {"seed": 42}),
    ("seed", 2**31 - 1, {"seed": 2**31 - 1}, {"seed": 2**31 - 1}),
    ("stop", ["###", USERS_LINE], {"stop": [USERS_LINE, "###"]}, {"stop": [USERS_LINE, "###"]}),
]


@pytest.mark.parametrize(("field", "value", "ollama", "vllm"), FIELDS)
async def test_each_control_reaches_the_server_under_its_name(
    chat, backend, field, value, ollama, vllm
):
    response = await chat.post("/api/chat", json=ask("hi", **{field: value}))
    assert response.status_code == 200, response.text
    expected = DEFAULT_STOP | (ollama if backend.name == "ollama" else vllm)
    assert backend.recorder.last.sampling == expected


@pytest.mark.parametrize("stream", [False, True])
async def test_absent_controls_are_not_sent(chat, backend, stream):
    body = ask("hi", stream=stream, tts_enabled=False, stop=[])  # only the default stop sent
    async with chat.stream("POST", "/api/chat", json=body) as response:
        await response.aread()
    assert response.status_code == 200
    prompt = backend.recorder.last
    assert prompt.sampling == DEFAULT_STOP
    if backend.name == "ollama":
        assert set(prompt.options) == {"temperature", "num_predict", "num_ctx", "stop"}
    else:
        expected = {"temperature", "max_tokens", "stop"} | ({"stream_options"} if stream else set())
        assert set(prompt.options) == expected


async def test_all_controls_together_in_a_streamed_turn(chat, backend):
    controls = {f: v for f, v, _, _ in FIELDS}  # the last value of each field
    body = ask("hi", stream=True, tts_enabled=False, **controls)
    async with chat.stream("POST", "/api/chat", json=body) as response:
        events = await read_events(response)
    assert events[-1][0] == "done"
    expected: dict = dict(DEFAULT_STOP)
    for _, _, ollama, vllm in FIELDS:
        expected |= ollama if backend.name == "ollama" else vllm
    assert backend.recorder.last.sampling == expected


@pytest.mark.parametrize(
    "extra",
    [
        {"top_p": 0},
        {"top_p": 1.01},
        {"top_p": "0.9"},
        {"top_k": -1},
        {"top_k": 1001},
        {"top_k": 1.5},
        {"top_k": True},
        {"min_p": -0.1},
        {"min_p": 1.5},
        {"repetition_penalty": 0.4},
        {"repetition_penalty": 2.1},
        {"presence_penalty": -2.5},
        {"presence_penalty": 2.01},
        {"frequency_penalty": -3},
        {"frequency_penalty": 2.5},
        {"seed": -1},
        {"seed": 2**31},
        {"seed": "42"},
        {"stop": "User:"},
        {"stop": [""]},
        {"stop": ["x" * 51]},
        {"stop": [str(n) for n in range(9)]},
        {"stop": [1]},
    ],
)
async def test_out_of_range_controls_are_422_and_spend_nothing(chat, backend, redis, extra):
    returning_visitor(chat)  # with its cookie: no id is minted (a mint is counted)
    response = await chat.post("/api/chat", json=ask("hi", **extra))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert next(iter(extra)) in error["message"]
    assert backend.recorder.prompts == []  # no LLM call
    assert await redis.keys("*") == []  # no session, no rate count


# The emulator's reply quotes the user's words: `You said: "<words>".` followed by more.
STOP_ASK = "where is the STOPHERE library"
CUT_REPLY_END = 'You said: "where is the'


async def test_stop_ends_the_reply_before_the_stop_text(chat, backend):
    body = ask(STOP_ASK, stop=["STOPHERE", "never written"], tts_enabled=False)
    data = (await chat.post("/api/chat", json=body)).json()["data"]
    assert data["content"].endswith(CUT_REPLY_END)
    assert "STOPHERE" not in data["content"] and "library" not in data["content"]
    history = (await chat.get(f"/api/chat/sessions/{data['session_id']}")).json()["data"]
    assert history["messages"][-1]["content"] == data["content"]


async def test_stop_ends_the_streamed_reply_and_its_speech_before_the_stop_text(chat, backend):
    # Realtime speech is asked for: the sentences spoken (here failing, as no tts service
    # listens) are named in audio events, and none holds the stop text.
    body = ask(STOP_ASK, stop=["STOPHERE"], stream=True, tts_mode="realtime")
    async with chat.stream("POST", "/api/chat", json=body) as response:
        events = await read_events(response)
    deltas = [data["content"] for kind, data in events if kind == "delta"]
    done = events[-1][1]
    assert events[-1][0] == "done"
    assert "".join(deltas) == done["content"]
    assert done["content"].endswith(CUT_REPLY_END)
    assert not any("STOP" in delta for delta in deltas)
    spoken = [data["text"] for kind, data in events if kind == "audio"]
    assert spoken and not any("STOPHERE" in text for text in spoken)
