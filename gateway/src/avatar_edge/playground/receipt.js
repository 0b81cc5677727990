// The receipt of a reply (the `context` of its done event): what the model saw, under the
// reply, collapsed. Its words are labelled elements (data-i18n), so the page's language
// switch relabels them too.

import { t } from "./i18n.js";

// The parts of the prompt, in its order, with their labels.
const PARTS = {
  system: "partSystem", character: "partCharacter", persona: "partPersona", lore: "partLore",
  examples: "partExamples", memories: "partMemories", summary: "partSummary", history: "partHistory",
  post_history: "partPostHistory", reserved: "partReserved",
};
const PLACES = { before_char: "placeBeforeChar", after_char: "placeAfterChar", depth: "placeDepth" };
const REASONS = {
  disabled: "reasonDisabled", secondary_key_missing: "reasonSecondaryKey", budget: "reasonBudget",
  bad_regex: "reasonBadRegex", probability: "reasonProbability", group: "reasonGroup",
  delayed: "reasonDelayed",
};

// An element with a label (a key of i18n.js), or with the given text when there is no label
// for it (a value the server added since).
function labelled(tag, key, text = "") {
  const element = document.createElement(tag);
  if (key) {
    element.dataset.i18n = key;
    element.textContent = t(key);
  } else {
    element.textContent = text;
  }
  return element;
}

function row(...cells) {
  const tr = document.createElement("tr");
  tr.append(...cells);
  return tr;
}

function cell(tag, text) {
  return labelled(tag, null, String(text));
}

function table(className, head, rows) {
  const element = document.createElement("table");
  element.className = className;
  const thead = document.createElement("thead");
  thead.append(row(...head.map((key) => labelled("th", key))));
  const tbody = document.createElement("tbody");
  tbody.append(...rows);
  element.append(thead, tbody);
  return element;
}

function place(entry) {
  const where = labelled("td", PLACES[entry.place], entry.place);
  if (entry.place === "depth" && entry.depth != null) {
    const depth = document.createElement("span");
    depth.textContent = ` ${entry.depth}`;
    where.append(depth);
  }
  return where;
}

// The receipt as a collapsed <details> (nothing when the reply has none).
export function receiptDetails(context) {
  if (!context) return null;
  const details = document.createElement("details");
  details.className = "receipt";
  details.append(labelled("summary", "modelSaw"));
  const tokens = context.tokens ?? {};
  const parts = Object.entries(PARTS).filter(([part]) => part in tokens);
  details.append(table("tokens", ["part", "tokens"], parts.map(([part, key]) => row(
    labelled("th", key), cell("td", tokens[part]),
  ))));

  const fired = context.lore ?? [];
  details.append(labelled("h4", "loreFired"));
  if (fired.length) {
    details.append(table("lore-fired", ["loreEntry", "loreKey", "lorePlace"], fired.map((entry) => row(
      cell("td", entry.entry), cell("td", entry.key), place(entry),
    ))));
  } else {
    details.append(labelled("p", "noneFired"));
  }

  const leftOut = context.lore_left_out ?? [];
  if (leftOut.length) {
    details.append(labelled("h4", "loreLeftOut"));
    details.append(table("lore-left-out", ["loreEntry", "loreReason"], leftOut.map((entry) => row(
      cell("td", entry.entry), labelled("td", REASONS[entry.reason], entry.reason),
    ))));
  }

  const memories = context.memories ?? [];
  if (memories.length) {
    details.append(labelled("h4", "memoriesUsed"));
    const list = document.createElement("ul");
    list.className = "memories-used";
    list.append(...memories.map((memory) => {
      const item = labelled("li", null, memory.text);
      if (memory.pinned) item.prepend(labelled("span", "pinnedMemory"), " ");
      return item;
    }));
    details.append(list);
  }

  const examples = document.createElement("p");
  examples.className = "examples-left-out";
  examples.append(labelled("span", "examplesLeftOut"), `: ${context.examples_left_out ?? 0}`);
  details.append(examples);
  return details;
}
