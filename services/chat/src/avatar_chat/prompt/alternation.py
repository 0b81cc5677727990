"""Messages for chat templates that take one system message and then user and assistant turns
strictly alternating, the user's first (Gemma's on vLLM refuses anything else). With
`LLM_ALTERNATE_ROLES`, the prompt is reshaped for them, and says the same:

- a system message after the first (lore placed at a depth, post-history instructions)
  becomes a bracketed note on the user turn that follows it (the last one when none does);
- a conversation that opens with the character (its greeting) gets an opening user turn;
- two turns of one role in a row are joined.
"""

Message = dict[str, str]

OPENING = "[Start a new chat]"  # what SillyTavern writes where a chat begins


def alternating(messages: list[Message]) -> list[Message]:
    head = messages[:1] if messages and messages[0]["role"] == "system" else []
    turns: list[Message] = []
    notes: list[str] = []
    for message in messages[len(head) :]:
        if message["role"] == "system":
            notes.append(f"[{message['content']}]")
            continue
        content = message["content"]
        if notes and message["role"] == "user":
            content, notes = "\n\n".join([*notes, content]), []
        if not turns and message["role"] == "assistant":
            turns.append({"role": "user", "content": OPENING})
        if turns and turns[-1]["role"] == message["role"]:
            turns[-1] = {**turns[-1], "content": f"{turns[-1]['content']}\n\n{content}"}
        else:
            turns.append({"role": message["role"], "content": content})
    if notes:  # after the last turn: on the last user turn, which the model answers
        last = next(i for i in range(len(turns) - 1, -1, -1) if turns[i]["role"] == "user")
        turns[last] = {**turns[last], "content": "\n\n".join([turns[last]["content"], *notes])}
    return head + turns
