// The playground: every part of Avatar Forge tried from one page, through the public API on
// this same origin (cookies, as the frontend does). No build step: a plain ES module.

const LABELS = {
  ko: {
    playground: "플레이그라운드", signIn: "로그인", signOut: "로그아웃", anonymous: "익명 사용자",
    signedInAs: "로그인:", characters: "캐릭터", dropCard: "캐릭터 카드(PNG 또는 JSON)를 여기에 놓거나",
    chooseCard: "파일 선택", mine: "내 캐릭터", presets: "기본 캐릭터", create: "새 캐릭터 만들기",
    name: "이름", persona: "페르소나", voice: "목소리", createButton: "만들기", chat: "채팅",
    talkingWith: "대화 상대", ttsMode: "음성", ttsRealtime: "실시간", ttsDelayed: "지연",
    ttsOnClick: "클릭할 때", ttsOff: "끄기", newSession: "새 대화", send: "보내기",
    avatar3d: "3D 아바타", make3d: "만들기", choose: "선택", export: "내보내기",
    imported: "가져왔습니다:", created: "만들었습니다:", summarized: "이전 대화를 요약했습니다.",
    retryAfter: "다시 시도까지", play: "듣기", pickCharacter: "먼저 캐릭터를 고르세요.",
    uploading: "올리는 중...", failed: "실패:", switchLanguage: "English", backend: "만드는 곳",
    backendDefault: "서버 기본값", backendRelief: "CPU (부조)", backendHunyuan: "GPU (Hunyuan3D-2)",
    done3d: "완성!", signInFailed: "로그인하지 못했습니다", speechFailed: "음성을 만들지 못했습니다:",
    speechLate: "음성 파일이 아직 없습니다.", cutOff: "응답이 중간에 끊겼습니다.",
  },
  en: {
    playground: "Playground", signIn: "Sign in", signOut: "Sign out", anonymous: "Anonymous",
    signedInAs: "Signed in:", characters: "Characters", dropCard: "Drop a Character Card (PNG or JSON) here, or",
    chooseCard: "choose a file", mine: "My characters", presets: "Presets", create: "Create a character",
    name: "Name", persona: "Persona", voice: "Voice", createButton: "Create", chat: "Chat",
    talkingWith: "Talking with", ttsMode: "Speech", ttsRealtime: "Realtime", ttsDelayed: "Delayed",
    ttsOnClick: "On click", ttsOff: "Off", newSession: "New conversation", send: "Send",
    avatar3d: "3D avatar", make3d: "Make", choose: "Choose", export: "Export",
    imported: "Imported:", created: "Created:", summarized: "Older turns were summarized.",
    retryAfter: "Retry-After", play: "Play", pickCharacter: "Choose a character first.",
    uploading: "Uploading...", failed: "Failed:", switchLanguage: "한국어", backend: "Made by",
    backendDefault: "Server default", backendRelief: "CPU (relief)", backendHunyuan: "GPU (Hunyuan3D-2)",
    done3d: "Done!", signInFailed: "Sign-in failed", speechFailed: "No speech for a sentence:",
    speechLate: "The speech file has not appeared.", cutOff: "The reply was cut off.",
  },
};

const $ = (id) => document.getElementById(id);
const state = {
  language: localStorage.getItem("playground.language") || (navigator.language.startsWith("ko") ? "ko" : "en"),
  user: null, // /api/auth/me's answer, or null when anonymous
  signInEnabled: false, // /api/health's sign_in is not "disabled"
  character: null, // the chosen character object
  voiceId: "default",
  sessionId: null,
  messages: [], // the conversation sent with each turn (the server keeps the history too)
  speaking: Promise.resolve(), // sentences play one after another
  conversation: 0, // counts conversations: what an older one still sends is dropped
  turn: null, // the AbortController of the reply being streamed
};
const t = (key) => LABELS[state.language][key];
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

// --- the API -----------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    Object.assign(this, { status, code, retryAfter });
  }
}

async function failure(response) {
  let code = "http_" + response.status, message = response.statusText;
  try {
    ({ code, message } = (await response.json()).error);
  } catch { /* not the envelope: keep the status line */ }
  return new ApiError(response.status, code, message, response.headers.get("Retry-After"));
}

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (!response.ok) throw await failure(response);
  const body = await response.json();
  return body.data ?? body; // /api/auth/me answers the bare user
}

const postJson = (path, body) => api(path, {
  method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
});

// Refusals in words: the server's message, and when to try again (429 and 503 say it).
function notify(text, error) {
  const notice = $("notice");
  let words = error ? `${text} ${error.message}` : text;
  if (error?.retryAfter) words += ` (${t("retryAfter")}: ${error.retryAfter}s)`;
  notice.textContent = words;
  notice.dataset.code = error?.code ?? "";
  notice.dataset.retryAfter = error?.retryAfter ?? "";
  notice.hidden = false;
}

// --- labels ----------------------------------------------------------------------------

function applyLanguage() {
  document.documentElement.lang = state.language;
  for (const element of document.querySelectorAll("[data-i18n]")) {
    element.textContent = t(element.dataset.i18n);
  }
  $("language").textContent = t("switchLanguage");
  showWho(state.user);
}

$("language").addEventListener("click", () => {
  state.language = state.language === "ko" ? "en" : "ko";
  localStorage.setItem("playground.language", state.language);
  applyLanguage();
  loadCharacters();
});

// --- who is signed in ----------------------------------------------------------------------

function showWho(user) {
  const who = $("who");
  who.textContent = user ? `${t("signedInAs")} ${user.email || user.username}` : t("anonymous");
  who.dataset.state = user ? "signed-in" : "anonymous";
  $("sign-out").hidden = !user;
  $("sign-in").hidden = Boolean(user) || !state.signInEnabled;
}

async function loadWho() {
  const health = await api("/api/health").catch(() => ({}));
  state.signInEnabled = health.sign_in !== "disabled";
  try {
    state.user = await api("/api/auth/me");
  } catch (error) {
    if (error.status !== 401) notify(t("failed"), error);
    state.user = null;
  }
  showWho(state.user);
}

$("sign-out").addEventListener("click", async () => {
  // The answer is a redirect to the frontend; the cookie is gone either way.
  await fetch("/api/auth/logout", { method: "POST", credentials: "same-origin", redirect: "manual" });
  // Another caller now: their own characters and conversations, not the last user's.
  state.character = null;
  startSession();
  await loadWho();
  loadCharacters();
});

// --- characters ------------------------------------------------------------------------

function characterItem(character) {
  const item = document.createElement("li");
  item.dataset.id = character.id;
  item.classList.toggle("selected", state.character?.id === character.id);
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

// Every page of a listing (each answers next_cursor until the last).
async function everyCharacter(path) {
  const characters = [];
  let cursor = null;
  do {
    const page = await api(cursor ? `${path}?cursor=${encodeURIComponent(cursor)}` : path);
    characters.push(...page.characters);
    cursor = page.next_cursor;
  } while (cursor);
  return characters;
}

async function loadCharacters() {
  try {
    const [own, presets] = await Promise.all([everyCharacter("/api/characters"), everyCharacter("/api/characters/presets")]);
    $("own-list").replaceChildren(...own.map(characterItem));
    $("preset-list").replaceChildren(...presets.map(characterItem));
    if (!state.character && presets.length) chooseCharacter(presets[0]);
  } catch (error) {
    notify(t("failed"), error);
  }
}

async function loadVoices() {
  const { voices, default_voice_id: fallback } = await api("/api/tts/voices").catch(() => ({ voices: [] }));
  $("voice-select").replaceChildren(...voices.map((voice) => new Option(voice.name, voice.id, voice.id === fallback)));
}

function chooseCharacter(character) {
  state.character = character;
  state.voiceId = character.voice_id || "default";
  $("chat-character").textContent = character.name;
  for (const item of document.querySelectorAll(".character-list li")) {
    item.classList.toggle("selected", item.dataset.id === character.id);
  }
  startSession();
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

$("card-file").addEventListener("change", (event) => {
  if (event.target.files[0]) importCard(event.target.files[0]);
  event.target.value = "";
});
const dropZone = $("drop-zone");
dropZone.addEventListener("dragover", (event) => { event.preventDefault(); dropZone.classList.add("over"); });
dropZone.addEventListener("dragleave", () => dropZone.classList.remove("over"));
dropZone.addEventListener("drop", (event) => {
  event.preventDefault();
  dropZone.classList.remove("over");
  if (event.dataTransfer.files[0]) importCard(event.dataTransfer.files[0]);
});

$("create-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const fields = Object.fromEntries(new FormData(event.target));
  try {
    const character = await postJson("/api/characters", fields);
    notify(`${t("created")} ${character.name}`);
    event.target.reset();
    await loadCharacters();
  } catch (error) {
    notify(t("failed"), error);
  }
});

// --- chat ----------------------------------------------------------------------------

function startSession() {
  state.turn?.abort();
  state.conversation += 1;
  state.speaking = Promise.resolve();
  state.sessionId = null;
  state.messages = [];
  $("messages").replaceChildren();
  $("speech").replaceChildren();
}

$("new-session").addEventListener("click", async () => {
  if (state.sessionId) {
    await api(`/api/chat/sessions/${state.sessionId}`, { method: "DELETE" }).catch(() => {});
  }
  startSession();
});

function addMessage(role, text) {
  const item = document.createElement("li");
  item.className = role;
  item.textContent = text;
  $("messages").append(item);
  item.scrollIntoView({ block: "end" });
  return item;
}

// Each spoken sentence gets its own player and starts when the one before is over (ended,
// failed, or paused by the user); a new conversation starts a new line of them.
function speak(audioUrl, text) {
  const audio = document.createElement("audio");
  audio.controls = true;
  audio.preload = "auto";
  audio.src = audioUrl;
  audio.title = text || "";
  $("speech").append(audio);
  const conversation = state.conversation;
  state.speaking = state.speaking.then(() => {
    if (conversation !== state.conversation) return undefined;
    return new Promise((done) => {
      for (const over of ["ended", "error", "pause", "emptied"]) {
        audio.addEventListener(over, done, { once: true });
      }
      audio.play().catch(done); // a browser may refuse sound before the user has clicked
    });
  });
}

// Delayed speech: the file appears at audio_url after the delay (and its synthesis); look
// for it (one byte of it) every second for a minute.
async function speakLater(audioUrl, delayMs) {
  const conversation = state.conversation;
  await sleep(delayMs);
  for (let attempt = 0; attempt < 60 && conversation === state.conversation; attempt += 1) {
    const found = await fetch(audioUrl, { credentials: "same-origin", headers: { Range: "bytes=0-0" } })
      .catch(() => null);
    if (found?.ok) return speak(audioUrl);
    await sleep(1000);
  }
  if (conversation === state.conversation) notify(t("speechLate"));
}

// /api/tts takes 1,000 characters at most: longer replies are spoken in sentence-long parts.
function speechParts(text, limit = 1000) {
  const parts = [];
  for (const sentence of text.match(/[^.!?。！？\n]+[.!?。！？]*\s*/g) ?? [text]) {
    for (let start = 0; start < sentence.length; start += limit) {
      const piece = sentence.slice(start, start + limit);
      if (parts.length && parts.at(-1).length + piece.length <= limit) parts[parts.length - 1] += piece;
      else parts.push(piece);
    }
  }
  return parts.map((part) => part.trim()).filter(Boolean);
}

function playButton(item, text) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = t("play");
  button.addEventListener("click", async () => {
    try {
      for (const part of speechParts(text)) {
        const made = await postJson("/api/tts", { text: part, voice_id: state.voiceId });
        speak(made.audio_url, part);
      }
    } catch (error) {
      notify(t("failed"), error);
    }
  });
  item.append(" ", button);
}

// The events of a text/event-stream body, as {event, data} objects, as they arrive.
async function* serverSentEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "", carry = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      // Lines may end in \r\n, \n or \r: one \n here (a \r at a chunk's end waits for
      // the next chunk, which may begin with its \n).
      let chunk = carry + value;
      carry = chunk.endsWith("\r") ? "\r" : "";
      if (carry) chunk = chunk.slice(0, -1);
      buffer += chunk.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event = parseEvent(block);
        if (event) yield event;
      }
    }
  } finally {
    reader.cancel().catch(() => {}); // a consumer that stops early stops the download too
  }
}

function parseEvent(block) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue; // a comment (keep-alive)
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") name = value;
    else if (field === "data") data.push(value);
  }
  return data.length ? { event: name, data: JSON.parse(data.join("\n")) } : null;
}

async function sendTurn(text) {
  const mode = $("tts-mode").value;
  state.messages.push({ role: "user", content: text });
  addMessage("user", text);
  const reply = addMessage("assistant", "");
  reply.dataset.deltas = "0";
  const body = {
    messages: state.messages, character_id: state.character.id, stream: true,
    tts_enabled: mode !== "off", tts_mode: mode === "off" ? "realtime" : mode, tts_delay_ms: 1000,
    ...(state.sessionId ? { session_id: state.sessionId } : {}),
  };
  const turn = new AbortController(); // a new conversation abandons this one
  state.turn = turn;
  const response = await fetch("/api/chat", {
    method: "POST", credentials: "same-origin", signal: turn.signal,
    headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw await failure(response); // 429, 503...: before any text
  for await (const { event, data } of serverSentEvents(response)) {
    if (event === "delta") {
      reply.textContent += data.content;
      reply.dataset.deltas = String(Number(reply.dataset.deltas) + 1);
    } else if (event === "audio") {
      if (data.audio_url) speak(data.audio_url, data.text);
      else notify(`${t("speechFailed")} ${data.tts_error?.message ?? data.text}`);
    } else if (event === "done") {
      if (!turn.signal.aborted) finishTurn(reply, data, mode);
      return;
    } else if (event === "error") {
      throw new ApiError(502, data.code, data.message, null);
    }
  }
  throw new ApiError(502, "cut_off", t("cutOff"), null); // the stream ended without `done`
}

function unsent(text) {
  const [asked, reply] = [...$("messages").children].slice(-2);
  asked.classList.add("unsent");
  if (!reply.textContent) reply.remove();
  if (!$("chat-input").value) $("chat-input").value = text;
}

function finishTurn(reply, data, mode) {
  reply.textContent = data.content;
  reply.dataset.done = "true";
  state.sessionId = data.session_id;
  state.messages.push({ role: "assistant", content: data.content });
  if (data.context_summarized) addMessage("note", t("summarized")).dataset.kind = "summarized";
  if (mode === "delayed" && data.audio_url) speakLater(data.audio_url, 1000);
  if (mode === "on_click") playButton(reply, data.content);
}

$("chat-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!state.character) return notify(t("pickCharacter"));
  const input = $("chat-input");
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  $("chat-send").disabled = true;
  const conversation = state.conversation;
  try {
    await sendTurn(text);
  } catch (error) {
    if (conversation === state.conversation) {
      // The turn did not happen: not sent again, its text back in the box to try again.
      state.messages.pop();
      unsent(text);
      notify(t("failed"), error);
    }
  } finally {
    $("chat-send").disabled = false;
  }
});

// --- 3D ------------------------------------------------------------------------------

async function follow(jobId) {
  const progress = $("gen3d-progress"), step = $("gen3d-step");
  for (;;) {
    const job = await api(`/api/generate/status/${jobId}`);
    progress.value = job.progress;
    step.textContent = job.current_step || "";
    if (job.status === "completed") {
      step.textContent = t("done3d");
      return job;
    }
    if (job.status === "failed") throw new ApiError(502, "failed", job.error, null);
    await sleep(500);
  }
}

// model-viewer would fetch its decoders from CDNs: point it at the copies shipped with the
// page (`make vendor`), so nothing leaves this origin on a LAN without internet.
const ModelViewer = customElements.get("model-viewer");
ModelViewer.dracoDecoderLocation = "/playground/vendor/draco/";
ModelViewer.ktx2TranscoderLocation = "/playground/vendor/basis/";
ModelViewer.lottieLoaderLocation = "/playground/vendor/no-lottie.js";

const viewer = $("viewer");
viewer.addEventListener("load", () => { viewer.dataset.loaded = "true"; });
viewer.addEventListener("error", () => notify(t("failed"), new ApiError(0, "model", "GLB", null)));

$("gen3d-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = $("gen3d-file").files[0];
  if (!file) return;
  const form = new FormData();
  form.append("image", file);
  const backend = $("gen3d-backend").value;
  if (backend) form.append("options", JSON.stringify({ backend }));
  $("gen3d-progress").hidden = false;
  $("gen3d-progress").value = 0;
  $("gen3d-step").textContent = t("uploading");
  viewer.hidden = true;
  delete viewer.dataset.loaded;
  try {
    const accepted = await api("/api/generate", { method: "POST", body: form });
    const job = await follow(accepted.job_id);
    viewer.hidden = false;
    viewer.src = job.result_url;
  } catch (error) {
    notify(t("failed"), error);
  }
});

// --- start ---------------------------------------------------------------------------

applyLanguage();
// Our own words for a failed sign-in; the code only when it looks like one (an error code of
// auth or of OAuth), so a crafted link cannot put its own text on this page.
const signInError = new URLSearchParams(location.search).get("sign_in_error");
if (signInError) notify(/^[a-z_]{1,40}$/.test(signInError) ? `${t("signInFailed")} (${signInError})` : t("signInFailed"));
await loadWho();
await Promise.all([loadCharacters(), loadVoices()]);
document.body.dataset.ready = "true";
