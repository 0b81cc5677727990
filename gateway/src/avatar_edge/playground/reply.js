// Replies streamed in: a turn (/api/chat), another alternate of the last reply (regenerate),
// more of the last reply (continue). Each streams its text into its message and, by the
// speech mode, its audio; the stop button cuts it (the server keeps what was shown, marked
// interrupted). Afterwards the conversation is read again: the server's record is the truth.

import { ApiError, failure } from "./api.js";
import { current, draw, loadConversation, merge } from "./chat.js";
import { listConversations } from "./conversations.js";
import { t } from "./i18n.js";
import { $, notify, sleep } from "./page.js";
import { serverSentEvents } from "./sse.js";

const DELAY_MS = 1000; // tts_delay_ms of delayed speech

// The generation options of every kind of reply: speech by the mode chosen, and the
// temperature when one is given (else the character's, else the server's).
function options() {
  const mode = $("tts-mode").value;
  const temperature = $("temperature").valueAsNumber;
  return {
    stream: true, tts_enabled: mode !== "off", tts_mode: mode === "off" ? "realtime" : mode,
    tts_delay_ms: DELAY_MS, ...(Number.isFinite(temperature) ? { temperature } : {}),
  };
}

// The events of one streamed reply: text to `onText`, audio to the speech queue; the done
// event's data is the answer. `answered()` is told once the server has taken the request.
async function stream(talk, path, body, signal, onText, answered) {
  const response = await fetch(path, {
    method: "POST", credentials: "same-origin", signal,
    headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw await failure(response); // 409, 429, 503...: before any text
  answered();
  for await (const { event, data } of serverSentEvents(response)) {
    if (event === "delta") {
      onText(data.content);
    } else if (event === "audio") {
      // No audio_url: tts_error is why, in words (a string).
      if (data.audio_url) talk.speak(data.audio_url, data.text);
      else notify(`${t("speechFailed")} ${data.tts_error ?? data.text}`);
    } else if (event === "done") {
      return data;
    } else if (event === "error") {
      throw new ApiError(502, data.code, data.message, null);
    }
  }
  throw new ApiError(502, "cut_off", t("cutOff"), null); // the stream ended without `done`
}

// A reply streamed into `message`, its text starting from `text`. `finished(data)` takes the
// done event's data; `refused()` undoes what was shown for a request refused before any text.
// Then the conversation is read again (a stopped reply: until the server has recorded it).
async function generate(talk, { message, text = "", path, body, finished, refused = () => {} }) {
  const stopper = (talk.stopper = new AbortController());
  talk.streaming = { message, text };
  draw(talk);
  let taken = false, done = null;
  try {
    const signal = AbortSignal.any([talk.signal, stopper.signal]); // a new conversation, or stop
    const onText = (delta) => {
      talk.streaming.text += delta;
      talk.items.get(message).querySelector(".text").textContent = talk.streaming.text;
    };
    done = await stream(talk, path, { ...body, ...options() }, signal, onText, () => { taken = true; });
    finished(done);
  } catch (error) {
    if (talk.over) return; // another conversation took its place: nothing to say
    if (!taken && !stopper.signal.aborted) {
      talk.streaming = null;
      refused();
      draw(talk);
      return notify(t("failed"), error);
    }
    if (!stopper.signal.aborted) notify(t("failed"), error);
  }
  message.content = talk.streaming.text; // what was shown, until the server's record is read
  talk.streaming = null;
  await readAgain(talk, stopper.signal.aborted);
  if (done && !talk.over) keep(talk, message, done);
}

// The conversation as the server has it now. A stream the page stopped is recorded when the
// server notices, a moment later: read until its last message is marked interrupted (a few
// seconds at most: one stopped before any text may leave nothing to mark).
async function readAgain(talk, stopped) {
  try {
    for (let tries = 0; ; tries += 1) {
      const data = await loadConversation(talk.sessionId);
      if (talk.over) return;
      if (!stopped || data.messages.at(-1)?.interrupted || tries >= 20) {
        return merge(talk, data.messages);
      }
      await sleep(250, talk.signal);
    }
  } catch (error) {
    if (!talk.over) {
      notify(t("failed"), error);
      draw(talk);
    }
  } finally {
    if (!talk.over) listConversations(talk.character, talk.sessionId); // its preview, its place
  }
}

// What came with a finished reply, kept with the alternate it made (the page shows it under
// that alternate); delayed speech is looked for.
function keep(talk, message, done) {
  message.made = { ...message.made, [message.swipe_id ?? 0]: done };
  draw(talk);
  if (options().tts_mode === "delayed" && done.audio_url) talk.speakLater(done.audio_url, DELAY_MS);
}

// A turn: the user's message, and the character's reply streamed in after it.
export async function submitTurn(event) {
  event.preventDefault();
  const talk = current();
  if (!talk.character) return notify(t("pickCharacter"));
  const input = $("chat-input");
  const text = input.value.trim();
  if (!text || talk.busy) return;
  input.value = "";
  await talk.opening; // the conversation it goes to is the one shown
  if (talk.over || !talk.sessionId) {
    input.value ||= text;
    return;
  }
  for (const unsent of $("messages").querySelectorAll("li.unsent")) unsent.remove(); // tried again
  const asked = { role: "user", content: text }; // ids come with the done event
  const reply = { role: "assistant", content: "" };
  talk.messages.push(asked, reply);
  await generate(talk, {
    message: reply,
    path: "/api/chat",
    body: { session_id: talk.sessionId, message: text },
    finished(done) {
      asked.id = done.user_message_id;
      reply.id = done.message_id;
    },
    refused() {
      // Not sent: marked so, its text back in the box to try again.
      talk.messages.splice(-2);
      talk.items.get(reply)?.remove();
      talk.items.get(asked)?.classList.add("unsent");
      input.value ||= text;
    },
  });
}

// Another alternate of the last reply, shown once made (its arrows go back to the others).
// After a user's message, the reply it never got (the server's regenerate does both).
export function regenerate(talk) {
  const last = talk.messages.at(-1);
  const reply = last.role === "user" ? { role: "assistant", content: "" } : last;
  if (reply !== last) talk.messages.push(reply);
  return generate(talk, {
    message: reply,
    path: `/api/chat/sessions/${encodeURIComponent(talk.sessionId)}/regenerate`,
    body: {},
    finished(done) {
      reply.id = done.message_id;
    },
    refused() {
      if (reply !== last) talk.messages.pop();
    },
  });
}

// More of the last reply: the new text is added to what it says.
export function continueReply(talk) {
  const message = talk.messages.at(-1);
  return generate(talk, {
    message,
    text: message.content,
    path: `/api/chat/sessions/${encodeURIComponent(talk.sessionId)}/continue`,
    body: {},
    finished() {},
  });
}

// The stop button: the stream is cut; the server keeps what was shown, marked interrupted.
export function stopReply() {
  current().stopper?.abort();
}
