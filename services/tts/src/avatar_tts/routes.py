from fastapi import APIRouter, Request

from avatar_shared.envelope import Envelope, ok
from avatar_shared.errors import ERROR_RESPONSES, not_built
from avatar_shared.identity import UserId
from avatar_tts.schemas import SpeechFile, TtsRequest, VoiceList

router = APIRouter(tags=["tts"], responses=ERROR_RESPONSES)


@router.post("/api/tts", response_model=Envelope[SpeechFile])
async def synthesize(body: TtsRequest, user_id: UserId) -> Envelope[SpeechFile]:
    not_built("POST /api/tts")


@router.get("/api/tts/voices", response_model=Envelope[VoiceList])
async def list_voices(request: Request) -> Envelope[VoiceList]:
    return ok(request.app.state.voices.get().public())


@router.get("/mnt/user_assets/{asset_path:path}", summary="Serve a stored audio file")
async def user_asset(asset_path: str, user_id: UserId) -> None:
    not_built("GET /mnt/user_assets/...")
