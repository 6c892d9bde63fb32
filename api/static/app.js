// Aurum demo page: submits photos through the public API (the same endpoints and API key a real
// web app uses), polls the jobs, and draws each result on its photo. No build step, no CDN.
"use strict";

const MESSAGES = {
  NO_FACE: "No face was found in this photo.",
  QUALITY_FAILED: "The face does not meet the quality requirements.",
  IMAGE_TOO_LARGE: "This photo is too large.",
  REQUEST_TOO_LARGE: "These photos are too large to send at once.",
  IMAGE_TOO_SMALL: "This photo is too small to contain a usable face.",
  UNSUPPORTED_FORMAT: "This file type is not supported: send a JPEG, PNG or WebP photo.",
  UNSUPPORTED_MEDIA_TYPE: "This file type is not supported: send a JPEG, PNG or WebP photo.",
  CORRUPT_IMAGE: "This photo is damaged and cannot be read.",
  EMPTY_IMAGE: "This file is empty.",
  RATE_LIMITED: "Too many requests: waiting before trying again.",
  SERVICE_UNAVAILABLE: "The service is unavailable right now. Try again in a moment.",
  UNAUTHENTICATED: "Enter an API key first.",
  INVALID_API_KEY: "This API key is not valid (unknown or revoked).",
  TOO_MANY_IMAGES: "Too many photos for one batch.",
  IMAGE_EXPIRED: "The photo expired before it could be scored. Send it again.",
  TIMEOUT: "Scoring took too long. Try again.",
  JOB_NOT_FOUND: "This job no longer exists (it expired or was deleted).",
};

const $ = (selector) => document.querySelector(selector);
const keyInput = $("#api-key");
const results = $("#results");
const announce = (text) => { $("#status").textContent = text; };

keyInput.value = sessionStorage.getItem("aurum-api-key") || "";
keyInput.addEventListener("change", () => sessionStorage.setItem("aurum-api-key", keyInput.value.trim()));

function messageFor(error) {
  if (!error) return "Something went wrong.";
  return MESSAGES[error.code] || `${error.message} (${error.code})`;
}

async function api(path, options = {}, attempt = 0) {
  const headers = { "X-API-Key": keyInput.value.trim(), ...(options.headers || {}) };
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (e) {
    throw { code: "SERVICE_UNAVAILABLE", message: String(e) };
  }
  if ((response.status === 429 || response.status === 503) && attempt < 4) {
    const wait = Number(response.headers.get("Retry-After")) || 2 ** attempt;
    announce(`${messageFor({ code: response.status === 429 ? "RATE_LIMITED" : "SERVICE_UNAVAILABLE" })} ${wait} s`);
    await new Promise((r) => setTimeout(r, wait * 1000));
    return api(path, options, attempt + 1);
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw body.error || { code: `HTTP_${response.status}`, message: response.statusText };
  return body;
}

function makeCard(file) {
  const card = $("#card").content.firstElementChild.cloneNode(true);
  card.querySelector(".name").textContent = file.name;
  card.querySelector(".photo").setAttribute("aria-label", `Photo ${file.name}`);
  results.append(card);
  return card;
}

function setState(card, state, text) {
  const el = card.querySelector(".state");
  el.dataset.state = state;
  el.textContent = text || state;
}

function showError(card, error) {
  setState(card, "failed", "failed");
  const el = card.querySelector(".error");
  el.hidden = false;
  el.textContent = messageFor(error);
  el.dataset.code = error && error.code ? error.code : "";
}

async function draw(card, file, result) {
  const canvas = card.querySelector(".photo");
  const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  const scale = Math.min(1, 640 / Math.max(bitmap.width, bitmap.height));
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  const showLandmarks = $("#show-landmarks").checked;
  const line = Math.max(2, canvas.width / 300);
  result.faces.forEach((face, i) => {
    const [x, y, w, h] = face.box.map((v) => v * scale);
    ctx.strokeStyle = face.quality.passed ? "#2fbf4a" : "#f0a020";
    ctx.lineWidth = line;
    ctx.strokeRect(x, y, w, h);
    if (showLandmarks && face.landmarks) {
      ctx.fillStyle = "rgba(0, 210, 255, 0.8)";
      for (const [px, py] of face.landmarks) ctx.fillRect(px * scale - 0.75, py * scale - 0.75, 1.5, 1.5);
    }
    const label = `#${i} ${scoreText(face.score, true)}`;
    ctx.font = `${Math.max(12, Math.round(canvas.width / 40))}px system-ui, sans-serif`;
    const tw = ctx.measureText(label).width;
    ctx.fillStyle = face.quality.passed ? "#2fbf4a" : "#f0a020";
    ctx.fillRect(x, Math.max(0, y - 22), tw + 10, 22);
    ctx.fillStyle = "#000";
    ctx.fillText(label, x + 5, Math.max(16, y - 6));
  });
  const list = card.querySelector(".faces");
  list.replaceChildren(...result.faces.map((face, i) => {
    const li = document.createElement("li");
    const reasons = face.quality.reasons.length ? face.quality.reasons.join(", ") : "none";
    li.append(`Face ${i}: score ${scoreText(face.score, false)}` +
              (face.pose ? `, yaw ${face.pose.yaw.toFixed(0)}°` : "") + " — quality ");
    const q = document.createElement("span");
    q.className = face.quality.passed ? "passed" : "reasons";
    q.textContent = face.quality.passed ? "passed" : `failed (${reasons})`;
    li.append(q);
    return li;
  }));
  canvas.setAttribute("aria-label", `Photo ${file.name}: ${result.faces.length} face(s)`);
  setState(card, "done", `done: ${result.faces.length} face(s)` + (result.cached ? " (from cache)" : "") +
           (result.degraded ? " (degraded)" : ""));
}

// A withheld score (the face cannot be judged) says why instead of showing a number.
function scoreText(score, short) {
  if (score.value === null || score.value === undefined) {
    const why = (score.withheld || []).join(", ");
    return short ? "—" : `withheld${why ? ` (${why})` : ""}`;
  }
  const conf = typeof score.confidence === "number" && !short ? ` (confidence ${score.confidence.toFixed(2)})` : "";
  return score.value.toFixed(1) + conf;
}

async function poll(url, onProgress) {
  for (let delay = 100; ; delay = Math.min(delay * 1.5, 1000)) {
    const job = await api(url);
    if (onProgress) onProgress(job);
    if (job.status === "succeeded" || job.status === "failed") return job;
    await new Promise((r) => setTimeout(r, delay));
  }
}

function options() {
  const form = new FormData();
  form.append("return_landmarks", "true");
  return form;
}

async function scoreOne(file, card) {
  const form = options();
  form.append("image", file, file.name);
  try {
    setState(card, "queued");
    const accepted = await api("/api/ml/score", { method: "POST", body: form });
    setState(card, "running");
    const job = await poll(accepted.status_url);
    if (job.status === "failed") return showError(card, job.error);
    await draw(card, file, job.result);
  } catch (error) {
    showError(card, error);
  }
}

async function scoreBatch(files, cards) {
  const form = options();
  files.forEach((file) => form.append("images", file, file.name));
  const bar = $("#batch-progress");
  $("#batch").hidden = false;
  bar.max = files.length;
  bar.value = 0;
  try {
    const accepted = await api("/api/ml/score/batch", { method: "POST", body: form });
    cards.forEach((card) => setState(card, "running"));
    const job = await poll(accepted.status_url, (j) => {
      const done = (j.progress && j.progress.done) || 0;
      bar.value = done;
      $("#batch-text").textContent = `${done} / ${files.length}`;
    });
    if (job.status === "failed") return cards.forEach((card) => showError(card, job.error));
    await Promise.all(job.result.items.map((item, i) =>
      item.error ? showError(cards[i], item.error) : draw(cards[i], files[i], item)));
  } catch (error) {
    cards.forEach((card) => showError(card, error));
  }
}

async function handle(fileList) {
  const files = Array.from(fileList);
  if (!files.length) return;
  if (!keyInput.value.trim()) {
    announce(MESSAGES.UNAUTHENTICATED);
  }
  const cards = files.map(makeCard);
  announce(`Scoring ${files.length} photo(s)`);
  if (files.length === 1) await scoreOne(files[0], cards[0]);
  else await scoreBatch(files, cards);
  announce("Done");
}

$("#photos").addEventListener("change", (e) => handle(e.target.files));
const zone = $("#drop-zone");
zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", (e) => { e.preventDefault(); zone.classList.remove("over"); handle(e.dataTransfer.files); });
