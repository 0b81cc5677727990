"""Chat through the real gateway, chat service process, Redis and the Ollama emulator."""

import json
import time

import httpx

PERSONA = "차분하고 친절한 사서. 존댓말을 쓴다."


def ask(text: str, **extra) -> dict:
    return {"messages": [{"role": "user", "content": text}], "persona": PERSONA, **extra}


async def test_chat_turn_through_the_gateway(gateway):
    response = await gateway.post("/api/chat", json=ask("도서관은 몇 시에 닫아요?"))
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert "도서관은" in data["content"] and data["usage"]["completion_tokens"] > 0
    history = await gateway.get(f"/api/chat/sessions/{data['session_id']}")
    assert [m["role"] for m in history.json()["data"]["messages"]] == ["user", "assistant"]


async def test_stream_through_the_gateway_is_not_buffered(gateway):
    started = time.perf_counter()
    arrivals, deltas, done = [], [], None
    body = ask("천천히 말해줘", stream=True, tts_enabled=False)
    async with gateway.stream("POST", "/api/chat", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                arrivals.append(time.perf_counter() - started)
                data = json.loads(line.removeprefix("data: "))
                if "session_id" in data:
                    done = data
                else:
                    deltas.append(data["content"])
    assert done is not None and "".join(deltas) == done["content"]
    # The emulator produces 100 tokens/s: the whole reply takes well over half a second.
    assert arrivals[-1] > 0.4
    assert arrivals[0] < arrivals[-1] / 3


async def test_models_through_the_gateway(gateway):
    models = (await gateway.get("/api/chat/models")).json()["data"]["models"]
    assert models[0]["name"].endswith("(Default)")


async def test_preset_character_through_the_gateway(stack, gateway):
    body = {"messages": [{"role": "user", "content": "도서관 가자"}], "character_id": "hermione"}
    response = await gateway.post("/api/chat", json=body)
    assert response.status_code == 200, response.text
    async with httpx.AsyncClient(trust_env=False) as direct:
        prompts = (await direct.get(f"{stack.emulator_url('ollama')}/_emulator/prompts")).json()
    system = prompts[-1]["messages_received"][0]
    assert system["role"] == "system" and "헤르미온느 그레인저" in system["content"]


async def test_character_crud_through_the_gateway(gateway):
    created = await gateway.post("/api/characters", json={"name": "게이트웨이", "persona": "p"})
    assert created.status_code == 201
    path = f"/api/characters/{created.json()['data']['id']}"
    assert (await gateway.get(path)).json()["data"]["name"] == "게이트웨이"
    assert (await gateway.delete(path)).status_code == 200
    assert (await gateway.get(path)).status_code == 404


async def test_a_character_voice_must_exist_in_the_tts_service(gateway):
    unknown = await gateway.post(
        "/api/characters", json={"name": "n", "persona": "p", "voice_id": "no_such_voice"}
    )
    assert unknown.status_code == 409 and unknown.json()["error"]["code"] == "unknown_voice"
    assert "no_such_voice" in unknown.json()["error"]["message"]
    known = await gateway.post(
        "/api/characters", json={"name": "n", "persona": "p", "voice_id": "luna"}
    )
    assert known.status_code == 201


async def test_speech_through_the_gateway(gateway):
    made = await gateway.post(
        "/api/tts", json={"text": "안녕하세요, 반갑습니다!", "voice_id": "luna"}
    )
    assert made.status_code == 200, made.text
    audio = await gateway.get(made.json()["data"]["audio_url"])
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
    assert audio.content[:4] == b"RIFF" and len(audio.content) == made.json()["data"]["file_size"]
