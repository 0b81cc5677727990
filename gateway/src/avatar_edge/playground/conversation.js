// One conversation with a character, as the chat service stores it: its session, its
// messages as the server last gave them, and all it still has under way (the reply being
// streamed, the sentences waiting their turn to be spoken, delayed speech being looked for).
// end() stops all of that at once, through its one AbortSignal.

import { t } from "./i18n.js";
import { $, notify, sleep } from "./page.js";

const FINISHED = ["ended", "error", "pause", "emptied"];

// Plays an <audio> and settles when it is over: ended, failed, or paused by the user (also
// when a new conversation removes it from the page).
function playThrough(audio) {
  return new Promise((done) => {
    for (const over of FINISHED) audio.addEventListener(over, done, { once: true });
    audio.play().catch(done); // a browser may refuse sound before the user has clicked
  });
}

export class Conversation {
  #controller = new AbortController();
  #speaking = Promise.resolve(); // the speech queue: each sentence after the one before

  constructor(character) {
    this.character = character; // null: nobody chosen yet
    this.sessionId = null; // once it is shown
    this.messages = []; // public messages, oldest first (a reply also keeps what came with it)
    this.items = new WeakMap(); // each message's <li>, drawn again in place as it changes
    this.streaming = null; // {message, text} while a reply streams into `message`
    this.stopper = null; // the AbortController of that stream (the stop button)
    this.opening = Promise.resolve(); // settles once the conversation is shown
  }

  get busy() {
    return this.streaming !== null;
  }

  get voiceId() {
    return this.character?.voice_id || "default";
  }

  get signal() {
    return this.#controller.signal;
  }

  get over() {
    return this.signal.aborted;
  }

  end() {
    this.#controller.abort();
  }

  // A player for one sentence, which starts when the one before is over.
  speak(audioUrl, text = "") {
    const audio = document.createElement("audio");
    audio.controls = true;
    audio.preload = "auto";
    audio.src = audioUrl;
    audio.title = text;
    $("speech").append(audio);
    this.#speaking = this.#speaking.then(() => (this.over ? undefined : playThrough(audio)));
  }

  // Delayed speech: the file appears at audio_url after the delay (and its synthesis); look
  // for it (one byte of it) every second for a minute.
  async speakLater(audioUrl, delayMs) {
    const { signal } = this;
    try {
      await sleep(delayMs, signal);
      for (let attempt = 0; attempt < 60; attempt += 1) {
        const found = await fetch(audioUrl, { credentials: "same-origin", headers: { Range: "bytes=0-0" }, signal })
          .catch(() => null);
        if (found?.ok) return this.speak(audioUrl);
        await sleep(1000, signal);
      }
      notify(t("speechLate"));
    } catch {
      // Only the end of the conversation gets here (sleep): nothing more to look for.
    }
  }
}
