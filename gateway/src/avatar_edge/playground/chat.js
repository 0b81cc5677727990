// The chat: the chosen character's conversation as the chat service stores it, shown one at
// a time, and what can be done to its messages (their alternates, edit, delete, branch).
// The replies themselves stream in through reply.js.

import { api, postJson, sendJson } from "./api.js";
import { Conversation } from "./conversation.js";
import { listConversations, rememberConversation } from "./conversations.js";
import { t } from "./i18n.js";
import { fillItem, messageItem, openEditor } from "./message.js";
import { $, notify } from "./page.js";
import { chosenPersona } from "./personas.js";
import { continueReply, regenerate } from "./reply.js";
import { speechParts } from "./speech.js";

let conversation = new Conversation(null);

export const current = () => conversation;

const sessionPath = (talk, rest = "") => `${conversationPath(talk.sessionId)}${rest}`;
const conversationPath = (sessionId) => `/api/chat/sessions/${encodeURIComponent(sessionId)}`;

// Whatever the conversation shown still had under way stops, and its messages and players
// leave the page: this one (with `character`, null: nobody) takes its place.
function replace(character) {
  conversation.end();
  conversation = new Conversation(character);
  $("chat-character").textContent = character?.name ?? "-";
  $("messages").replaceChildren();
  $("speech").replaceChildren();
  $("export-chat").hidden = true;
  delete $("messages").dataset.session;
  return conversation;
}

// `load()`'s conversation (a promise of the sessions endpoints' answer) shown with
// `character`: talk.opening settles once it is (or it failed, said in the notice).
function showWhenLoaded(character, load) {
  const talk = replace(character);
  talk.opening = (async () => {
    try {
      const data = await load(talk);
      if (!talk.over) await show(talk, data);
    } catch (error) {
      if (!talk.over) notify(t("failed"), error);
    }
  })();
  return talk.opening;
}

// A conversation with `character`: the one asked for, else their latest, else a new one
// (which opens with the character's greeting). No character: none, and none remembered.
export function talkWith(character, sessionId = null) {
  if (!character) {
    replace(null);
    rememberConversation(null);
    return listConversations(null);
  }
  return showWhenLoaded(character, async () => {
    const id = sessionId ?? (await listConversations(character))[0]?.session_id;
    return id ? loadConversation(id) : startConversation(character);
  });
}

export function openConversation(sessionId) {
  return showWhenLoaded(conversation.character, () => loadConversation(sessionId));
}

// A conversation just made (a branch, an import): its answer shown (all of it: the answer
// holds its latest messages only).
export function showMade(data) {
  const whole = () => (data.next_before == null ? data : loadConversation(data.session_id));
  return showWhenLoaded(conversation.character, whole);
}

// The new-conversation button: another conversation with the same character, for the persona
// chosen now (the earlier ones stay in the list).
export function newSession() {
  const { character } = conversation;
  if (!character) return notify(t("pickCharacter"));
  return showWhenLoaded(character, () => startConversation(character));
}

// The list's ×: the conversation goes; when it was the one shown, the character's latest
// (or a new one) takes its place.
export async function deleteConversation(sessionId) {
  if (!confirm(t("confirmRemoveChat"))) return;
  const { character } = conversation;
  try {
    await api(conversationPath(sessionId), { method: "DELETE" });
    if (conversation.sessionId === sessionId) await talkWith(character);
    else await listConversations(character, conversation.sessionId);
  } catch (error) {
    notify(t("failed"), error);
  }
}

function startConversation(character) {
  const persona = chosenPersona();
  return postJson("/api/chat/sessions", {
    character_id: character.id, ...(persona ? { user_persona_id: persona.id } : {}),
  });
}

// The whole conversation: the sessions endpoint answers the latest page; older pages are put
// in front until the oldest kept.
export async function loadConversation(sessionId) {
  const path = `${conversationPath(sessionId)}?limit=200`;
  const data = await api(path);
  for (let page = data; page.next_before != null;) {
    page = await api(`${path}&before=${page.next_before}`);
    data.messages.unshift(...page.messages);
  }
  return data;
}

async function show(talk, data) {
  talk.sessionId = data.session_id;
  talk.messages = data.messages;
  $("messages").dataset.session = data.session_id;
  $("messages").dataset.character = talk.character.id;
  Object.assign($("export-chat"), { href: sessionPath(talk, "/export"), hidden: false });
  draw(talk);
  rememberConversation(talk.sessionId);
  await listConversations(talk.character, talk.sessionId);
}

// The server's messages now, merged into those shown: a message it already had keeps its
// object (and so its item and what came with it).
export function merge(talk, messages) {
  const known = new Map(talk.messages.map((message) => [message.id, message]));
  talk.messages = messages.map((message) => Object.assign(known.get(message.id) ?? {}, message));
  draw(talk);
}

// Every message's item drawn as its message is now, in order. Items of messages no longer
// there go, except a turn marked unsent (it stays until the next turn).
export function draw(talk) {
  const list = $("messages");
  const onClick = $("tts-mode").value === "on_click";
  const items = talk.messages.map((message, index) => {
    if (!talk.items.has(message)) talk.items.set(message, messageItem((...args) => act(talk, ...args)));
    return fillItem(talk.items.get(message), talk, index, onClick);
  });
  items.forEach((item, index) => {
    if (list.children[index] !== item) list.insertBefore(item, list.children[index] ?? null);
  });
  for (const stale of [...list.children].slice(items.length)) {
    if (!stale.classList.contains("unsent")) stale.remove();
  }
  $("chat-send").disabled = talk.busy;
  $("stop").hidden = !talk.busy;
}

// A redraw of the conversation shown (the speech mode changed: its play buttons).
export const redraw = () => draw(conversation);

// What a message's buttons do. Each asks the server, and shows its answer (a refusal, such as
// conversation_busy while a reply is being made, is said in the notice).
async function act(talk, name, item, ...args) {
  const message = talk.messages.find((each) => talk.items.get(each) === item);
  if (!message || talk.busy || talk.over) return;
  const path = sessionPath(talk, `/messages/${encodeURIComponent(message.id)}`);
  // A change of this conversation, shown once made (the list too: its preview); true if it was.
  const change = async (request) => {
    try {
      await request();
      if (talk.over) return true;
      draw(talk);
      listConversations(talk.character, talk.sessionId);
      return true;
    } catch (error) {
      if (!talk.over) notify(t("failed"), error);
      return false;
    }
  };
  if (name === "swipe") {
    const count = message.swipes.length;
    const index = ((message.swipe_id ?? 0) + args[0] + count) % count;
    await change(async () => Object.assign(message, await sendJson("PUT", `${path}/swipe`, { index })));
  } else if (name === "edit") {
    const close = (form) => { form.remove(); draw(talk); };
    openEditor(item, message.content, (content) => change(async () => {
      Object.assign(message, await sendJson("PATCH", path, { content }));
    }), close);
  } else if (name === "remove") {
    if (!confirm(t("confirmRemove"))) return;
    await change(async () => {
      await api(path, { method: "DELETE" });
      talk.messages = talk.messages.filter((each) => each !== message);
    });
  } else if (name === "branch") {
    try {
      await showMade(await postJson(sessionPath(talk, "/branch"), { message_id: message.id }));
    } catch (error) {
      notify(t("failed"), error);
    }
  } else if (name === "regenerate" || name === "answer") {
    await regenerate(talk);
  } else if (name === "continueReply") {
    await continueReply(talk);
  } else if (name === "play") {
    await speak(talk, message.content);
  }
}

// Speech on click: the message's text, in parts /api/tts takes.
async function speak(talk, text) {
  try {
    for (const part of speechParts(text)) {
      const made = await postJson("/api/tts", { text: part, voice_id: talk.voiceId });
      talk.speak(made.audio_url, part);
    }
  } catch (error) {
    notify(t("failed"), error);
  }
}

// Another persona chosen: a conversation nobody has said anything in yet is made again for
// it (its greeting says the persona's name); one under way keeps whom it was started with.
export async function personaChanged() {
  const talk = conversation;
  await talk.opening;
  const untouched = !talk.messages.some((message) => message.role === "user");
  if (talk.over || !talk.sessionId || talk.busy || !untouched) return;
  await api(sessionPath(talk), { method: "DELETE" }).catch(() => {});
  await newSession();
}
