// "I am": the caller's user personas (who the character is talking with), chosen in a select
// and created with a small form. The chosen one goes with each new conversation
// (user_persona_id; the conversation keeps it): its name is {{user}}.

import { everyItem, postJson } from "./api.js";
import { t } from "./i18n.js";
import { $, notify } from "./page.js";

let personas = []; // the caller's, as /api/personas lists them

// The persona chosen in the select, or null (— none —).
export function chosenPersona() {
  return personas.find((persona) => persona.id === $("persona-select").value) ?? null;
}

function showPersonas(selected) {
  const none = new Option(t("noPersona"), "");
  none.dataset.i18n = "noPersona"; // relabelled with the page
  $("persona-select").replaceChildren(none, ...personas.map((p) => new Option(p.name, p.id, false, p.id === selected)));
}

// The caller's personas, drawn again; their default is chosen (as the server would use it).
export async function loadPersonas() {
  try {
    personas = await everyItem("/api/personas", "personas");
  } catch (error) {
    personas = [];
    if (error.status !== 401) notify(t("failed"), error);
  }
  showPersonas(personas.find((persona) => persona.is_default)?.id);
}

// The form's persona made, and chosen (the select's change listener is told).
export async function createPersona(event) {
  event.preventDefault();
  const fields = Object.fromEntries(new FormData(event.target));
  try {
    const persona = await postJson("/api/personas", fields);
    personas.unshift(persona);
    showPersonas(persona.id);
    event.target.reset();
    notify(`${t("created")} ${persona.name}`);
    $("persona-select").dispatchEvent(new Event("change"));
  } catch (error) {
    notify(t("failed"), error);
  }
}
