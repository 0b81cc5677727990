// Who is signed in (or anonymous), and signing out.

import { api } from "./api.js";
import { t } from "./i18n.js";
import { $, notify } from "./page.js";

let user = null; // /api/auth/me's answer, or null when anonymous
let signInEnabled = false; // /api/health's sign_in is not "disabled"

export function showWho() {
  const who = $("who");
  who.textContent = user ? `${t("signedInAs")} ${user.email || user.username}` : t("anonymous");
  who.dataset.state = user ? "signed-in" : "anonymous";
  $("sign-out").hidden = !user;
  $("sign-in").hidden = Boolean(user) || !signInEnabled;
}

export async function loadWho() {
  const health = await api("/api/health").catch(() => ({}));
  signInEnabled = health.sign_in !== "disabled";
  try {
    user = await api("/api/auth/me");
  } catch (error) {
    if (error.status !== 401) notify(t("failed"), error);
    user = null;
  }
  showWho();
}

export async function signOut() {
  // The answer is a redirect to the frontend; the cookie is gone either way.
  await fetch("/api/auth/logout", { method: "POST", credentials: "same-origin", redirect: "manual" });
  await loadWho();
}

// Our own words for a failed sign-in; the code only when it looks like one (an error code of
// auth or of OAuth), so a crafted link cannot put its own text on this page.
export function showSignInError() {
  const code = new URLSearchParams(location.search).get("sign_in_error");
  if (code) notify(/^[a-z_]{1,40}$/.test(code) ? `${t("signInFailed")} (${code})` : t("signInFailed"));
}
