"""What the routes need, as `Annotated` dependencies read from the lifespan state."""

from typing import Annotated, TypedDict

from fastapi import Depends, Request

from avatar_shared.rate import Caller, CallerDep
from avatar_shared.state import lifespan_state
from avatar_tts.service import SpeechService


class TtsState(TypedDict):
    """What the tts lifespan adds to the base state (see app.py)."""

    speech: SpeechService


async def _speech(request: Request) -> SpeechService:
    return lifespan_state(request, TtsState)["speech"]


async def _speaker(caller: CallerDep, request: Request) -> Caller:
    """The caller of a speech request, once it is counted against their rate, and an
    anonymous caller's against their address's too (ids cost nothing)."""
    await (await _speech(request)).rate.hit(caller)
    return caller


SpeechDep = Annotated[SpeechService, Depends(_speech)]
# The caller of `POST /api/tts`, after TTS_RATE_PER_MIN (and for an anonymous caller
# TTS_RATE_PER_MIN_PER_ADDRESS) allowed the request.
SpeakerDep = Annotated[Caller, Depends(_speaker)]
