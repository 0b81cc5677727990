from fastapi import APIRouter
from fastapi.responses import FileResponse, Response, StreamingResponse

from avatar_shared.envelope import Envelope, ok
from avatar_shared.errors import COMMON, JSON_BODY, PARAMETERS, STORE_WRITES, error_responses
from avatar_shared.identity import CALLER_ERRORS, WRITER_ERRORS, UserId
from avatar_shared.rate import RATE_ERRORS
from avatar_tts.audio import CONTENT_TYPES, content_type
from avatar_tts.deps import SpeakerDep, SpeechDep
from avatar_tts.errors import (
    AudioNotFound,
    FileIdTaken,
    TtsBusy,
    TtsError,
    TtsRejected,
    TtsTimeout,
    TtsUnavailable,
    VoiceNotFound,
)
from avatar_tts.schemas import SpeechFile, TtsRequest, VoiceList

router = APIRouter(tags=["tts"], responses=error_responses(COMMON))

# What making speech can answer, besides the request's own errors.
SPEECH_ERRORS = (
    VoiceNotFound,
    FileIdTaken,
    TtsRejected,
    TtsBusy,
    TtsError,
    TtsUnavailable,
    TtsTimeout,
)


@router.post(
    "/api/tts",
    response_model=Envelope[SpeechFile],
    responses={
        200: {"content": {t: {} for t in CONTENT_TYPES.values()}},
        **error_responses(JSON_BODY, WRITER_ERRORS, RATE_ERRORS, SPEECH_ERRORS, STORE_WRITES),
    },
)
async def synthesize(
    body: TtsRequest, caller: SpeakerDep, speech: SpeechDep
) -> Envelope[SpeechFile] | Response:
    job = speech.synthesis(body)
    if body.early:
        early = await speech.speak_early(caller, job)
        if early is not None:
            return ok(early)
    if body.return_binary and body.streaming_mode > 0:
        audio = await speech.speak_streaming(caller, job, body.file_id)
        if audio is not None:
            return StreamingResponse(
                audio, media_type=content_type(body.media_type, speech.raw_rate)
            )
    stored = await speech.speak(caller, job, body.file_id)
    if body.return_binary:
        path = speech.path_of(caller.user_id, stored)
        return FileResponse(path, media_type=content_type(stored.format, speech.raw_rate))
    return ok(stored)


@router.get("/api/tts/voices", response_model=Envelope[VoiceList])
async def list_voices(speech: SpeechDep) -> Envelope[VoiceList]:
    return ok(speech.voice_list())


@router.get(
    "/mnt/user_assets/{user_id}/audio/{file_name}",
    summary="A stored audio file (its owner's only: 404 to everyone else); while its speech "
    "is still being made, its bytes as they are written",
    responses=error_responses(PARAMETERS, CALLER_ERRORS, AudioNotFound),
)
async def user_asset(user_id: str, file_name: str, speech: SpeechDep, caller: UserId) -> Response:
    if user_id != caller:
        raise AudioNotFound()  # not 403: another user's file ids are not confirmed either
    extension = file_name.rsplit(".", 1)[-1]
    if (growing := await speech.being_made(user_id, file_name)) is not None:
        # Its speech is still being made: the bytes as they are written (not kept: the whole
        # file, with its real length in the header, is served once it is done).
        headers = {"Cache-Control": "no-store"}
        return StreamingResponse(
            growing, media_type=content_type(extension, speech.raw_rate), headers=headers
        )
    path = await speech.user_file(user_id, file_name)
    # File ids are never reused, so the content behind a URL never changes.
    headers = {"Cache-Control": "private, max-age=31536000, immutable"}
    return FileResponse(path, media_type=content_type(extension, speech.raw_rate), headers=headers)
