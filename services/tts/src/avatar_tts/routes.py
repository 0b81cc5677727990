import re
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response, StreamingResponse

from avatar_shared.envelope import Envelope, ok
from avatar_shared.errors import ERROR_RESPONSES, NotFound
from avatar_shared.identity import UserId
from avatar_tts.audio import CONTENT_TYPES
from avatar_tts.engines import Synthesis
from avatar_tts.errors import VoiceNotFound
from avatar_tts.schemas import SpeechFile, TtsRequest, VoiceList
from avatar_tts.speech import SpeechService

router = APIRouter(tags=["tts"], responses=ERROR_RESPONSES)

# Names this service gives out; anything else (`..`, encoded dots, slashes) is not a file.
SAFE_USER = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SAFE_FILE = re.compile(r"^[A-Za-z0-9_-]{8,64}\.(wav|ogg|aac|raw)$")


def _speech(request: Request) -> SpeechService:
    return request.app.state.speech


Speech = Annotated[SpeechService, Depends(_speech)]


@router.post(
    "/api/tts",
    response_model=Envelope[SpeechFile],
    responses={200: {"content": {t: {} for t in CONTENT_TYPES.values()}}},
)
async def synthesize(
    body: TtsRequest, user_id: UserId, request: Request, speech: Speech
) -> Envelope[SpeechFile] | Response:
    voice = request.app.state.voices.get().find(body.voice_id)
    if voice is None:
        raise VoiceNotFound(body.voice_id)
    job = Synthesis(
        body.text, voice, body.text_lang, body.prompt_lang, body.media_type, body.streaming_mode
    )
    if body.return_binary and body.streaming_mode > 0:
        audio = await speech.speak_streaming(user_id, job)
        if audio is not None:
            return await stream_audio(audio, CONTENT_TYPES[body.media_type])
    stored = await speech.speak(user_id, job, body.file_id)
    if body.return_binary:
        path = speech.user_folder(user_id) / f"{stored.file_id}.{stored.format}"
        return FileResponse(path, media_type=CONTENT_TYPES[stored.format])
    return ok(stored)


async def stream_audio(audio: AsyncIterator[bytes], media_type: str) -> StreamingResponse:
    """Waits for the first bytes before answering, so a failure up front is an ordinary
    error response rather than a broken stream."""
    first = await anext(audio)

    async def rest() -> AsyncIterator[bytes]:
        yield first
        async for chunk in audio:
            yield chunk

    return StreamingResponse(rest(), media_type=media_type)


@router.get("/api/tts/voices", response_model=Envelope[VoiceList])
async def list_voices(request: Request) -> Envelope[VoiceList]:
    return ok(request.app.state.voices.get().public())


@router.get("/mnt/user_assets/{user_id}/audio/{file_name}", summary="A stored audio file")
async def user_asset(user_id: str, file_name: str, speech: Speech) -> FileResponse:
    path = speech.user_folder(user_id) / file_name
    if not (SAFE_USER.match(user_id) and SAFE_FILE.match(file_name) and path.is_file()):
        raise NotFound("No such audio file.")
    await speech.retention.used(path)
    extension = file_name.rsplit(".", 1)[1]
    # File ids are never reused, so the content behind a URL never changes.
    headers = {"Cache-Control": "private, max-age=31536000, immutable"}
    return FileResponse(path, media_type=CONTENT_TYPES[extension], headers=headers)
