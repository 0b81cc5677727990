// The playground: every part of Avatar Forge tried from one page, through the public API on
// this same origin. No build step: plain ES modules, this one first (index.html loads it).

import { loadWho, showSignInError, showWho, signOut } from "./account.js";
import { cardChosen, cardDrop, chooseCharacter, createCharacter, loadCharacters, loadVoices } from "./characters.js";
import { newSession, personaChanged, submitTurn } from "./chat.js";
import { configureViewer, submitJob, viewerFailed, viewerLoaded } from "./gen3d.js";
import { applyLabels, switchLanguage } from "./i18n.js";
import { $ } from "./page.js";
import { createPersona, loadPersonas } from "./personas.js";
import { loadSpeechLimit } from "./speech.js";

function relabel() {
  switchLanguage();
  showWho();
  loadCharacters(); // their buttons are labelled too
}

async function signedOut() {
  await signOut();
  // Another caller now: their own characters, personas and conversations, not the last user's.
  chooseCharacter(null);
  await loadPersonas();
  await loadCharacters();
}

// The page made ready to use: its labels, the viewer's decoders, and the listeners of all
// its fixed elements (only here; the lists' and replies' own buttons get theirs as made).
function init() {
  applyLabels();
  configureViewer();
  $("language").addEventListener("click", relabel);
  $("sign-out").addEventListener("click", signedOut);
  $("card-file").addEventListener("change", cardChosen);
  for (const [type, listener] of Object.entries(cardDrop)) $("drop-zone").addEventListener(type, listener);
  $("create-form").addEventListener("submit", createCharacter);
  $("new-session").addEventListener("click", newSession);
  $("persona-select").addEventListener("change", personaChanged);
  $("persona-form").addEventListener("submit", createPersona);
  $("chat-form").addEventListener("submit", submitTurn);
  $("gen3d-form").addEventListener("submit", submitJob);
  $("viewer").addEventListener("load", viewerLoaded);
  $("viewer").addEventListener("error", viewerFailed);
}

// What the page shows first: who is here, their personas, the characters (the first preset's
// greeting, for the default persona), the voices, the speech limit.
async function start() {
  showSignInError();
  await loadWho();
  await Promise.all([loadPersonas().then(loadCharacters), loadVoices(), loadSpeechLimit()]);
  document.body.dataset.ready = "true";
}

init();
await start();
