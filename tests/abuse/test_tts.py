"""Speech, as a hostile client tries it against the real stack at production defaults
(ASSETS_MAX_BYTES 2 GiB, ASSETS_MAX_BYTES_PER_USER 100 MiB, TTS_RATE_PER_MIN 120,
TTS_RATE_PER_MIN_PER_ADDRESS 240). A cache hit is a hard link to audio already on disk, and
anonymous ids are free: names of stored audio cost no bytes, so asking for many of them,
from many ids, evicts nobody's audio. Addresses 127.0.50-59.x are this module's."""

import asyncio

import httpx

from tests.helpers import client_from

# The longest text tts takes (MAX_SPEECH_CHARS): a minute of audio, 3.84 MB of WAV.
LONGEST = 1000
SHARE_BYTES = 100 * 1024**2  # ASSETS_MAX_BYTES_PER_USER's default
FOLDER_BYTES = 2 * 1024**3  # ASSETS_MAX_BYTES's default


def longest_text(tag: str) -> str:
    return f"{tag} " + "가" * (LONGEST - len(tag) - 1)


async def speak(client: httpx.AsyncClient, text: str, **fields: str) -> dict:
    response = await client.post("/api/tts", json={"text": text, **fields})
    assert response.status_code == 200, response.text
    data: dict = response.json()["data"]
    return data


async def still_there(client: httpx.AsyncClient, audio_url: str) -> bool:
    response = await client.get(audio_url, headers={"Range": "bytes=0-0"})
    return response.status_code == 206


async def test_names_of_stored_audio_from_many_ids_cannot_evict_anothers(abuse_stack):
    base = abuse_stack.gateway_url
    async with client_from(base, "127.0.50.1") as victim:
        # The victim holds just under a share: more than any attacking id names below.
        kept = [await speak(victim, longest_text(f"victim {n}")) for n in range(26)]
        size = kept[0]["file_size"]
        async with client_from(base, "127.0.51.100") as maker:
            await speak(maker, longest_text("popular"))
        names_per_id = 25
        ids = [client_from(base, f"127.0.51.{n // 2 + 1}") for n in range(22)]  # 2 ids each

        async def names(client: httpx.AsyncClient, n: int) -> list[dict]:
            async with client:
                return [
                    await speak(
                        client, longest_text("popular"), file_id=f"another-name-{n:02}-{k:04}"
                    )
                    for k in range(names_per_id)
                ]

        made = [
            name for batch in await asyncio.gather(*map(names, ids, range(22))) for name in batch
        ]
        # Counted per name, these names and the victim's audio are more than the folder
        # holds, and the victim, holding the most, would give back first.
        assert (len(made) + len(kept)) * size > FOLDER_BYTES
        assert names_per_id < len(kept) and len(kept) * size < SHARE_BYTES
        assert all(name["cached"] for name in made)
        present = [await still_there(victim, k["audio_url"]) for k in kept]
    assert present == [True] * len(kept)


async def test_names_of_stored_audio_take_no_share_of_their_holder(abuse_stack):
    base = abuse_stack.gateway_url
    async with client_from(base, "127.0.52.1") as maker:
        made = await speak(maker, longest_text("shared"))
    async with client_from(base, "127.0.52.2") as caller:
        count = SHARE_BYTES // made["file_size"] + 2  # a share's worth and more, counted per name
        names = [
            await speak(caller, longest_text("shared"), file_id=f"my-own-name-{n:04}")
            for n in range(count)
        ]
        present = [await still_there(caller, name["audio_url"]) for name in names]
    assert present == [True] * count


async def test_anonymous_ids_of_one_address_share_a_speech_rate(abuse_stack):
    base = abuse_stack.gateway_url
    per_address, per_id = 240, 120
    ids = [client_from(base, "127.0.53.1") for _ in range(3)]
    answers = []
    for _ in range(per_address // len(ids) + 1):  # 81 each: under the per-id rate
        for client in ids:
            answers.append((await client.post("/api/tts", json={"text": "안녕."})).status_code)
    async with client_from(base, "127.0.53.2") as elsewhere:
        other = await elsewhere.post("/api/tts", json={"text": "안녕."})
    for client in ids:
        await client.aclose()
    assert len(answers) // len(ids) < per_id
    assert answers[:per_address] == [200] * per_address
    assert set(answers[per_address:]) == {429}
    assert other.status_code == 200
