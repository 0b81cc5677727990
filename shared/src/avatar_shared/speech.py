"""What the tts service takes, which the services that ask it for speech must know too (services
never import one another's code)."""

# The longest text one `POST /api/tts` speaks: TtsRequest.text's maxLength, which the OpenAPI
# document shows. The chat service cuts a longer reply to it before asking for its speech.
MAX_SPEECH_CHARS = 1000
