"""Speech for chat replies, asked of the tts service: the whole reply (`voicing`), or a
streamed reply sentence by sentence (`speaker`, `sentences`). A speech failure never fails
the chat: the caller gets the text, with `tts_error` saying why there is no audio."""
