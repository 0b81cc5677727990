"""What the routes need, as `Annotated` dependencies read from the lifespan state."""

from typing import Annotated

from fastapi import Depends, Request

from avatar_tts.service import SpeechService


def _speech(request: Request) -> SpeechService:
    return request.state.speech


SpeechDep = Annotated[SpeechService, Depends(_speech)]
