// What every part of the page uses: its elements, a pause, and the notice line.

import { t } from "./i18n.js";

export const $ = (id) => document.getElementById(id);

// A pause that a signal cuts short (it then rejects with the signal's reason), so a loop
// that waits between tries stops as soon as its owner is done with it.
export function sleep(ms, signal) {
  return new Promise((done, fail) => {
    signal?.throwIfAborted();
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      fail(signal.reason);
    }, { once: true });
  });
}

// Refusals in words: the server's message, and when to try again (429 and 503 say it).
export function notify(text, error) {
  const notice = $("notice");
  let words = error ? `${text} ${error.message}` : text;
  if (error?.retryAfter) words += ` (${t("retryAfter")}: ${error.retryAfter}s)`;
  notice.textContent = words;
  notice.dataset.code = error?.code ?? "";
  notice.dataset.retryAfter = error?.retryAfter ?? "";
  notice.hidden = false;
}
