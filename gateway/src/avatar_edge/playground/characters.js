// The caller's characters and the presets: listed, chosen, imported from a Character Card,
// created from the form.

import { api, everyItem, postJson } from "./api.js";
import { talkWith } from "./chat.js";
import { lastConversation } from "./conversations.js";
import { t } from "./i18n.js";
import { $, notify } from "./page.js";

let chosen = null; // the character chosen in the lists

function characterItem(character) {
  const item = document.createElement("li");
  item.dataset.id = character.id;
  item.classList.toggle("selected", chosen?.id === character.id);
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = character.name;
  const choose = document.createElement("button");
  choose.type = "button";
  choose.textContent = t("choose");
  choose.addEventListener("click", () => chooseCharacter(character));
  item.append(name, choose);
  for (const format of ["json", "png"]) {
    const link = document.createElement("a");
    link.href = `/api/characters/${encodeURIComponent(character.id)}/export?format=${format}`;
    link.textContent = format.toUpperCase();
    link.title = t("export");
    link.download = "";
    item.append(link);
  }
  return item;
}

// A character by id: the listed one, else asked for (it may be someone else's public one);
// null when it is gone.
async function characterById(id, listed) {
  return listed.find((character) => character.id === id)
    ?? api(`/api/characters/${encodeURIComponent(id)}`).catch(() => null);
}

// The lists, drawn again (in the page's language). When nobody is chosen yet: the character
// of the conversation the page showed last, and that conversation (a reload brings it back),
// else the first preset.
export async function loadCharacters() {
  try {
    const [own, presets] = await Promise.all([
      everyItem("/api/characters", "characters"), everyItem("/api/characters/presets", "characters"),
    ]);
    $("own-list").replaceChildren(...own.map(characterItem));
    $("preset-list").replaceChildren(...presets.map(characterItem));
    if (chosen) return;
    const last = await lastConversation();
    const character = last?.character_id && await characterById(last.character_id, [...own, ...presets]);
    if (character) await chooseCharacter(character, last.session_id);
    else if (presets.length) await chooseCharacter(presets[0]);
  } catch (error) {
    notify(t("failed"), error);
  }
}

export async function loadVoices() {
  const { voices, default_voice_id: fallback } = await api("/api/tts/voices").catch(() => ({ voices: [] }));
  // Selected now (the 4th argument), not only after a reset (the 3rd): options added to a
  // select leave its first chosen.
  const option = (voice) => new Option(voice.name, voice.id, voice.id === fallback, voice.id === fallback);
  $("voice-select").replaceChildren(...voices.map(option));
}

// Choosing a character (or none) shows a conversation with it: `sessionId`, else their
// latest, else a new one (settled once it is shown).
export function chooseCharacter(character, sessionId = null) {
  chosen = character;
  for (const item of document.querySelectorAll(".character-list li")) {
    item.classList.toggle("selected", item.dataset.id === character?.id);
  }
  return talkWith(character, sessionId);
}

async function importCard(file) {
  const form = new FormData();
  form.append("file", file);
  try {
    const character = await api("/api/characters/import", { method: "POST", body: form });
    notify(`${t("imported")} ${character.name}`);
    await loadCharacters();
  } catch (error) {
    notify(t("failed"), error);
  }
}

export function cardChosen(event) {
  if (event.target.files[0]) importCard(event.target.files[0]);
  event.target.value = "";
}

// The drop zone's listeners, by event type.
export const cardDrop = {
  dragover(event) {
    event.preventDefault();
    event.currentTarget.classList.add("over");
  },
  dragleave(event) {
    event.currentTarget.classList.remove("over");
  },
  drop(event) {
    event.preventDefault();
    event.currentTarget.classList.remove("over");
    if (event.dataTransfer.files[0]) importCard(event.dataTransfer.files[0]);
  },
};

export async function createCharacter(event) {
  event.preventDefault();
  const fields = Object.fromEntries(new FormData(event.target));
  if (!fields.voice_id) delete fields.voice_id; // no voice list (it failed to load): the default
  try {
    const character = await postJson("/api/characters", fields);
    notify(`${t("created")} ${character.name}`);
    event.target.reset();
    await loadCharacters();
  } catch (error) {
    notify(t("failed"), error);
  }
}
