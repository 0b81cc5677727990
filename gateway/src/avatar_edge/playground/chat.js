// The chat: a turn streamed in from /api/chat (text and, by the speech mode, its audio),
// one conversation at a time.

import { api, ApiError, failure, postJson } from "./api.js";
import { Conversation } from "./conversation.js";
import { fixGreeting, greetingItem, greetingsFor } from "./greeting.js";
import { t } from "./i18n.js";
import { $, notify } from "./page.js";
import { chosenPersona } from "./personas.js";
import { receiptDetails } from "./receipt.js";
import { speechParts } from "./speech.js";
import { serverSentEvents } from "./sse.js";

const DELAY_MS = 1000; // tts_delay_ms of delayed speech

let conversation = new Conversation(null);

// A new conversation with `character` (null: nobody): whatever the last one still had under
// way stops, and its messages and players leave the page. It opens with the character's
// greeting (the promise settles once it is shown).
export function talkWith(character) {
  conversation.end();
  conversation = new Conversation(character);
  $("chat-character").textContent = character?.name ?? "-";
  $("messages").replaceChildren();
  $("speech").replaceChildren();
  return greet(conversation);
}

// The greeting, for the persona chosen now, shown as the first message (again: the same
// alternate, expanded for another persona), until the user has said something.
function greet(talk) {
  talk.opening = (async () => {
    if (!talk.character) return;
    const asked = (talk.greetingsAsked += 1); // only the latest answer is shown
    let greetings = [];
    try {
      greetings = await greetingsFor(talk.character, chosenPersona());
    } catch (error) {
      if (!talk.over) notify(t("failed"), error);
    }
    if (talk.over || talk.greetingFixed || asked !== talk.greetingsAsked) return;
    talk.greetings = greetings;
    talk.greetingIndex = Math.min(talk.greetingIndex, Math.max(greetings.length - 1, 0));
    $("messages").querySelector("li.greeting")?.remove();
    if (talk.greeting) $("messages").prepend(greetingItem(talk));
  })();
  return talk.opening;
}

// Another persona chosen: the greeting says its name, if it is not fixed yet.
export function personaChanged() {
  if (!conversation.greetingFixed) greet(conversation);
}

export async function newSession() {
  const { sessionId, character } = conversation;
  if (sessionId) await api(`/api/chat/sessions/${sessionId}`, { method: "DELETE" }).catch(() => {});
  talkWith(character);
}

function addMessage(role, text) {
  const item = document.createElement("li");
  item.className = role;
  item.textContent = text;
  $("messages").append(item);
  item.scrollIntoView({ block: "end" });
  return item;
}

function playButton(talk, item, text) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = t("play");
  button.addEventListener("click", async () => {
    try {
      for (const part of speechParts(text)) {
        const made = await postJson("/api/tts", { text: part, voice_id: talk.voiceId });
        talk.speak(made.audio_url, part);
      }
    } catch (error) {
      notify(t("failed"), error);
    }
  });
  item.append(" ", button);
}

async function sendTurn(talk, text) {
  const mode = $("tts-mode").value;
  const persona = chosenPersona();
  talk.greetingFixed = true; // the user has said something: this greeting it is
  fixGreeting($("messages").querySelector("li.greeting"));
  talk.messages.push({ role: "user", content: text });
  addMessage("user", text);
  const reply = addMessage("assistant", "");
  reply.dataset.deltas = "0";
  const body = {
    messages: talk.sent, character_id: talk.character.id, stream: true,
    tts_enabled: mode !== "off", tts_mode: mode === "off" ? "realtime" : mode, tts_delay_ms: DELAY_MS,
    ...(talk.sessionId ? { session_id: talk.sessionId } : {}),
    ...(persona ? { user_persona_id: persona.id } : {}),
  };
  const response = await fetch("/api/chat", {
    method: "POST", credentials: "same-origin", signal: talk.signal,
    headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw await failure(response); // 429, 503...: before any text
  for await (const { event, data } of serverSentEvents(response)) {
    if (event === "delta") {
      reply.textContent += data.content;
      reply.dataset.deltas = String(Number(reply.dataset.deltas) + 1);
    } else if (event === "audio") {
      // No audio_url: tts_error is why, in words (a string).
      if (data.audio_url) talk.speak(data.audio_url, data.text);
      else notify(`${t("speechFailed")} ${data.tts_error ?? data.text}`);
    } else if (event === "done") {
      if (!talk.over) finishTurn(talk, reply, data, mode);
      return;
    } else if (event === "error") {
      throw new ApiError(502, data.code, data.message, null);
    }
  }
  throw new ApiError(502, "cut_off", t("cutOff"), null); // the stream ended without `done`
}

function finishTurn(talk, reply, data, mode) {
  reply.textContent = data.content;
  reply.dataset.done = "true";
  talk.sessionId = data.session_id;
  talk.messages.push({ role: "assistant", content: data.content });
  if (mode === "on_click") playButton(talk, reply, data.content);
  const receipt = receiptDetails(data.context);
  if (receipt) reply.append(receipt);
  if (data.context_summarized) addMessage("note", t("summarized")).dataset.kind = "summarized";
  if (mode === "delayed" && data.audio_url) talk.speakLater(data.audio_url, DELAY_MS);
}

// The turn did not happen: not sent again, its text back in the box to try again.
function unsent(talk, text) {
  talk.messages.pop();
  const [asked, reply] = [...$("messages").children].slice(-2);
  asked.classList.add("unsent");
  if (!reply.textContent) reply.remove();
  if (!$("chat-input").value) $("chat-input").value = text;
}

export async function submitTurn(event) {
  event.preventDefault();
  const talk = conversation;
  if (!talk.character) return notify(t("pickCharacter"));
  const input = $("chat-input");
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  $("chat-send").disabled = true;
  try {
    await talk.opening; // the greeting it answers is the one shown
    if (talk.over) return;
    await sendTurn(talk, text);
  } catch (error) {
    if (!talk.over) { // else a new conversation abandoned it: nothing to say
      unsent(talk, text);
      notify(t("failed"), error);
    }
  } finally {
    $("chat-send").disabled = false;
  }
}
