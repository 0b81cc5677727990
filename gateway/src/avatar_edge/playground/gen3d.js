// 3D: a picture sent to /api/generate, its job followed on the progress bar, the GLB shown
// in <model-viewer>. The GPU backend is for signed-in users: an anonymous visitor who asks
// for it is told why, with a way to sign in right there.

import { api, ApiError } from "./api.js";
import { t } from "./i18n.js";
import { $, notify, sleep } from "./page.js";

const POLL_MS = 500;

// The submission the progress bar follows: a new one stops the last one's polling, so two
// jobs never fight over the bar.
let current = new AbortController();

// model-viewer would fetch its decoders from CDNs: point it at the copies shipped with the
// page (`make vendor`), so nothing leaves this origin on a LAN without internet.
export function configureViewer() {
  const ModelViewer = customElements.get("model-viewer");
  ModelViewer.dracoDecoderLocation = "/playground/vendor/draco/";
  ModelViewer.ktx2TranscoderLocation = "/playground/vendor/basis/";
  ModelViewer.lottieLoaderLocation = "/playground/vendor/no-lottie.js";
}

export const viewerLoaded = () => { $("viewer").dataset.loaded = "true"; };
export const viewerFailed = () => notify(t("failed"), new ApiError(0, "model", "GLB", null));

// The job's progress and step on the page until it is done (or `signal` says stop).
async function follow(jobId, signal) {
  const progress = $("gen3d-progress"), step = $("gen3d-step");
  for (;;) {
    const job = await api(`/api/generate/status/${jobId}`, { signal });
    progress.value = job.progress;
    step.textContent = job.current_step || "";
    if (job.status === "completed") {
      step.textContent = t("done3d");
      return job;
    }
    if (job.status === "failed") throw new ApiError(502, "failed", job.error, null);
    await sleep(POLL_MS, signal);
  }
}

export async function submitJob(event) {
  event.preventDefault();
  const file = $("gen3d-file").files[0];
  if (!file) return;
  current.abort();
  current = new AbortController();
  const { signal } = current;
  const form = new FormData();
  form.append("image", file);
  const backend = $("gen3d-backend").value;
  if (backend) form.append("options", JSON.stringify({ backend }));
  const viewer = $("viewer");
  $("gen3d-progress").hidden = false;
  $("gen3d-progress").value = 0;
  $("gen3d-step").textContent = t("uploading");
  viewer.hidden = true;
  delete viewer.dataset.loaded;
  try {
    const accepted = await api("/api/generate", { method: "POST", body: form, signal });
    const job = await follow(accepted.job_id, signal);
    viewer.hidden = false;
    viewer.src = job.result_url;
  } catch (error) {
    if (signal.aborted) return; // a newer job has the bar
    if (error.code === "sign_in_required") offerSignIn();
    notify(t("failed"), error);
  }
}

// Why the GPU was refused, and the sign-in that opens it, where the job's steps show.
function offerSignIn() {
  $("gen3d-progress").hidden = true;
  const step = $("gen3d-step");
  const signIn = document.createElement("a");
  signIn.className = "button";
  signIn.id = "gen3d-sign-in";
  signIn.href = "/api/auth/google/login?next=%2Fplayground%2F";
  signIn.textContent = t("signIn");
  step.replaceChildren(`${t("gpuNeedsSignIn")} `, signIn);
}
