// The chosen character's conversations (the chat list), the one shown remembered (this
// browser's storage and the page's URL: a reload brings it back), and conversations in and
// out as SillyTavern chat files (JSONL).

import { api, everyItem } from "./api.js";
import { current, deleteConversation, openConversation, showMade } from "./chat.js";
import { t } from "./i18n.js";
import { $, notify } from "./page.js";
import { chosenPersona } from "./personas.js";

const STORED = "playground.conversation";

export function rememberConversation(sessionId) {
  const url = new URL(location.href);
  if (sessionId) {
    localStorage.setItem(STORED, sessionId);
    url.searchParams.set("conversation", sessionId);
  } else {
    localStorage.removeItem(STORED);
    url.searchParams.delete("conversation");
  }
  history.replaceState(null, "", url);
}

// The conversation this page showed last (the URL's, else this browser's last), or null when
// there is none or it is gone (deleted, or another caller's now that someone else is here).
export async function lastConversation() {
  const sessionId = new URL(location.href).searchParams.get("conversation") || localStorage.getItem(STORED);
  if (!sessionId) return null;
  try {
    return await api(`/api/chat/sessions/${encodeURIComponent(sessionId)}?limit=1`);
  } catch {
    rememberConversation(null);
    return null;
  }
}

const when = (at) => new Date(at).toLocaleString(document.documentElement.lang);

function conversationItem(conversation, shownId) {
  const item = document.createElement("li");
  item.dataset.session = conversation.session_id;
  item.classList.toggle("selected", conversation.session_id === shownId);
  const open = document.createElement("button");
  open.type = "button";
  open.className = "open";
  open.textContent = conversation.title || conversation.preview || t("emptyChat");
  open.addEventListener("click", () => openConversation(conversation.session_id));
  const about = document.createElement("span");
  about.className = "about";
  const at = conversation.updated_at ?? conversation.created_at;
  about.textContent = `${conversation.message_count} · ${when(at)}`;
  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "removeChat";
  remove.textContent = "×";
  remove.title = t("removeChat");
  remove.setAttribute("aria-label", t("removeChat"));
  remove.addEventListener("click", () => deleteConversation(conversation.session_id));
  item.append(open, about, remove);
  return item;
}

// The character's conversations listed (the one shown marked), pinned first, then the latest
// first; they are also the answer. Only those kept on the server: a client-mode record (its
// client sent the history) takes no turns here.
export async function listConversations(character, shownId = null) {
  if (!character) {
    $("conversation-list").replaceChildren();
    return [];
  }
  try {
    const path = `/api/chat/sessions?character_id=${encodeURIComponent(character.id)}`;
    const listed = (await everyItem(path, "conversations")).filter((each) => each.mode === "server");
    if (current().character?.id === character.id) { // else another character's list is shown now
      $("conversation-list").replaceChildren(...listed.map((each) => conversationItem(each, shownId)));
    }
    return listed;
  } catch (error) {
    notify(t("failed"), error);
    return [];
  }
}

// A chat file chosen: imported as a new conversation with the character shown (and the
// persona chosen), and shown.
export async function importChosen(event) {
  const [file] = event.target.files;
  event.target.value = "";
  const { character } = current();
  if (!file) return;
  if (!character) return notify(t("pickCharacter"));
  const form = new FormData();
  form.append("file", file);
  form.append("character_id", character.id);
  const persona = chosenPersona();
  if (persona) form.append("user_persona_id", persona.id);
  try {
    await showMade(await api("/api/chat/sessions/import", { method: "POST", body: form }));
  } catch (error) {
    notify(t("failed"), error);
  }
}
