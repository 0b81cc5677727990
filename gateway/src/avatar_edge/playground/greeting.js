// A character's greetings (its first message, then the alternates), expanded for the caller,
// and the first message of a conversation that shows them: ‹ › go through the alternates
// until the user has said something, and then the greeting is fixed.

import { api } from "./api.js";
import { t } from "./i18n.js";

// {{char}} and {{user}} (also <BOT> and <USER>, in any case) as the server expands them.
export function expandMacros(text, char, user) {
  return text.replace(/\{\{char\}\}|<bot>/gi, char).replace(/\{\{user\}\}|<user>/gi, user);
}

// Without the greetings endpoint (404): the character's own fields, expanded here.
async function rawGreetings(character, persona) {
  const full = await api(`/api/characters/${encodeURIComponent(character.id)}`);
  const texts = [full.first_message, ...(full.alternate_greetings ?? [])];
  return texts.map((text) => expandMacros(text ?? "", full.nickname || full.name, persona?.name || "User"));
}

// The greetings' texts, first message first (none for a character without one).
export async function greetingsFor(character, persona) {
  const query = persona ? `?user_persona_id=${encodeURIComponent(persona.id)}` : "";
  let texts;
  try {
    const answer = await api(`/api/characters/${encodeURIComponent(character.id)}/greetings${query}`);
    texts = answer.greetings.map((greeting) => greeting.text);
  } catch (error) {
    if (error.status !== 404) throw error;
    texts = await rawGreetings(character, persona);
  }
  return texts.filter((text) => text.trim());
}

function arrow(key, symbol, onClick) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = key;
  button.textContent = symbol;
  button.title = t(key);
  button.setAttribute("aria-label", t(key));
  button.addEventListener("click", onClick);
  return button;
}

// The greeting as the conversation's first message: `talk.greetings[talk.greetingIndex]`, with
// arrows when there are alternates (they move greetingIndex).
export function greetingItem(talk) {
  const item = document.createElement("li");
  item.className = "greeting";
  const text = document.createElement("span");
  text.className = "text";
  const count = document.createElement("span");
  count.className = "count";
  const show = () => {
    text.textContent = talk.greetings[talk.greetingIndex];
    count.textContent = `${talk.greetingIndex + 1}/${talk.greetings.length}`;
  };
  const step = (by) => () => {
    talk.greetingIndex = (talk.greetingIndex + by + talk.greetings.length) % talk.greetings.length;
    show();
  };
  item.append(text);
  if (talk.greetings.length > 1) {
    const nav = document.createElement("span");
    nav.className = "greeting-nav";
    nav.append(arrow("previousGreeting", "‹", step(-1)), count, arrow("nextGreeting", "›", step(1)));
    item.append(nav);
  }
  show();
  return item;
}

// The greeting is what it is now: its arrows go.
export function fixGreeting(item) {
  item?.querySelector(".greeting-nav")?.remove();
}
