// One message of the conversation as an item of the list, and the ways to change it.
// An item is made once and drawn again in place (fillItem) whenever its message changes:
// the elements inside stay the same, so an open receipt stays open and whoever holds one
// (the browser tests) still holds it.

import { t } from "./i18n.js";
import { receiptDetails } from "./receipt.js";

// The buttons under a message, in this order; `act(name, item)` is what a click does.
// The last message also gets what can follow it: another alternate of a reply (regenerate),
// more of the character's words (continue), the reply a user's message never got (answer).
// Play is for speech on click.
const ACTIONS = ["edit", "remove", "branch", "regenerate", "continueReply", "answer", "play"];

function span(className, ...children) {
  const element = document.createElement("span");
  element.className = className;
  element.append(...children);
  return element;
}

// A button whose label is a key of i18n.js (data-i18n: the language switch relabels it).
function actionButton(key, onClick) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = key;
  button.dataset.i18n = key;
  button.textContent = t(key);
  button.addEventListener("click", onClick);
  return button;
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

// A new item, empty until fillItem draws its message. Its parts: the text, the interrupted
// mark, the ‹ n/m › arrows through the alternates, the buttons, and what came with the
// reply (its receipt, the summarized note).
export function messageItem(act) {
  const item = document.createElement("li");
  const on = (name, ...args) => () => act(name, item, ...args);
  const mark = span("interrupted-mark");
  mark.dataset.i18n = "interrupted";
  mark.textContent = t("interrupted");
  item.append(
    span("text"),
    mark,
    span("swipe-nav", arrow("previousSwipe", "‹", on("swipe", -1)), span("count"),
      arrow("nextSwipe", "›", on("swipe", 1))),
    span("actions", ...ACTIONS.map((name) => actionButton(name, on(name)))),
    span("extras"),
  );
  return item;
}

// The item drawn for talk.messages[index]. The conversation's opening message (the
// character's greeting) is not a reply: it has no regenerate, and its arrows go through the
// character's greetings.
export function fillItem(item, talk, index, speechOnClick) {
  const message = talk.messages[index];
  const last = index === talk.messages.length - 1;
  const opening = index === 0 && message.role === "assistant";
  const reply = message.role === "assistant" && !opening;
  const streaming = talk.streaming?.message === message;
  const part = (name) => item.querySelector(`:scope > .${name}`); // an editor may be among them
  const [text, mark, nav, actions, extras] = ["text", "interrupted-mark", "swipe-nav", "actions", "extras"].map(part);
  item.className = opening ? "greeting" : message.role;
  item.dataset.messageId = message.id ?? "";
  if (streaming) delete item.dataset.done;
  else item.dataset.done = "true";
  text.textContent = streaming ? talk.streaming.text : message.content;
  text.hidden = Boolean(item.querySelector(".editor"));
  mark.hidden = streaming || !message.interrupted;
  const swipes = message.swipes ?? [];
  nav.hidden = streaming || !last || swipes.length < 2; // as SillyTavern: the last one only
  nav.querySelector(".count").textContent = `${(message.swipe_id ?? 0) + 1}/${swipes.length}`;
  actions.hidden = streaming || !message.id; // a message is changed by its id
  const assistant = message.role === "assistant";
  const shown = {
    regenerate: last && reply, continueReply: last && assistant, answer: last && !assistant,
    play: assistant && speechOnClick,
  };
  for (const button of actions.children) button.hidden = shown[button.className] === false;
  for (const button of item.querySelectorAll("button")) button.disabled = talk.busy;
  fillExtras(extras, message);
  return item;
}

// What came with the alternate shown, when this page saw it made (`message.made`, by
// alternate: the done event's data): its receipt, and the note that older turns were
// summarized for it. Made again only when that changes: an open receipt stays open.
function fillExtras(extras, message) {
  const made = message.made?.[message.swipe_id ?? 0] ?? null;
  if (extras.made === made) return;
  extras.made = made;
  extras.replaceChildren();
  const receipt = receiptDetails(made?.context);
  if (receipt) extras.append(receipt);
  if (made?.context_summarized) {
    const note = span("note");
    note.dataset.kind = "summarized";
    note.dataset.i18n = "summarized";
    note.textContent = t("summarized");
    extras.append(note);
  }
}

// The message's text in a box to edit, in place of the text; `save(text)` sends it (the box
// stays, with its text, when that fails).
export function openEditor(item, content, save, close) {
  if (item.querySelector(".editor")) return;
  const form = document.createElement("form");
  form.className = "editor";
  const box = document.createElement("textarea");
  box.value = content;
  box.rows = Math.min(12, content.split("\n").length + 1);
  const done = actionButton("save", () => {});
  done.type = "submit";
  form.append(box, actionButton("cancel", () => close(form)), done);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (await save(box.value)) close(form);
  });
  item.querySelector(".text").after(form);
  item.querySelector(".text").hidden = true;
  box.focus();
}
