// The playground: every part of Avatar Forge tried from one page, through the public API on
// this same origin. No build step: plain ES modules, this one first (index.html loads it).

import { loadWho, showSignInError, showWho, signOut } from "./account.js";
import { cardChosen, cardDrop, chooseCharacter, createCharacter, loadCharacters, loadVoices } from "./characters.js";
import { newSession, personaChanged, redraw } from "./chat.js";
import { importChosen } from "./conversations.js";
import { configureViewer, submitJob, viewerFailed, viewerLoaded } from "./gen3d.js";
import { applyLabels, switchLanguage } from "./i18n.js";
import { $ } from "./page.js";
import { createPersona, loadPersonas } from "./personas.js";
import { stopReply, submitTurn } from "./reply.js";
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
  $("import-chat").addEventListener("change", importChosen);
  $("tts-mode").addEventListener("change", redraw); // speech on click: the play buttons
  $("persona-select").addEventListener("change", personaChanged);
  $("persona-form").addEventListener("submit", createPersona);
  $("chat-form").addEventListener("submit", submitTurn);
  $("stop").addEventListener("click", stopReply);
  $("gen3d-form").addEventListener("submit", submitJob);
  $("viewer").addEventListener("load", viewerLoaded);
  $("viewer").addEventListener("error", viewerFailed);
}

// What the page shows first: who is here, their personas, the characters (the conversation
// shown last, else the first preset's latest, else a new one for the default persona), the
// voices, the speech limit.
async function start() {
  showSignInError();
  await loadWho();
  await Promise.all([loadPersonas().then(loadCharacters), loadVoices(), loadSpeechLimit()]);
  document.body.dataset.ready = "true";
}

init();
await start();
