// The draw-a-digit page. It calls only TF Serving's REST API: GET /v1/models/mnist
// and POST /v1/models/mnist:predict with the serving_bytes signature and a {"b64": ...} PNG.
"use strict";

const API = "/v1/models/mnist";
const BRUSH = 22; // pixels on the 280-pixel pad: MNIST's 2-3 pixel strokes at 28x28
const STEP = 10; // pixels per arrow key
// Below this (calibrated) top probability the answer is shown as "Not sure": such answers are wrong more
// than one time in ten. The same threshold as mnist-tf predict's (mnist_tf.core.types.SURE).
const SURE = 0.9;

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const seen = document.getElementById("seen");
const digitOut = document.getElementById("digit");
const confidence = document.getElementById("confidence");
const bars = document.getElementById("bars");
const statusLine = document.getElementById("status");
let drawing = null; // the last point of the stroke under way
let cursor = { x: pad.width / 2, y: pad.height / 2 };
let inked = false;
let asked = 0; // requests sent; answers to older ones are dropped

function clearPad() {
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, pad.width, pad.height);
  inked = false;
  cursor = { x: pad.width / 2, y: pad.height / 2 };
  asked++;
  showAnswer(null);
  setState("idle");
  say("");
}

function say(text, isError = false) {
  statusLine.textContent = text;
  statusLine.classList.toggle("error", isError);
}

function point(event) {
  const box = pad.getBoundingClientRect();
  return {
    x: ((event.clientX - box.left) * pad.width) / box.width,
    y: ((event.clientY - box.top) * pad.height) / box.height,
  };
}

function stroke(from, to) {
  ctx.strokeStyle = "#fff";
  ctx.fillStyle = "#fff";
  ctx.lineWidth = BRUSH;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.moveTo(from.x, from.y);
  ctx.lineTo(to.x, to.y);
  ctx.stroke();
  inked = true;
}

pad.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  drawing = point(event);
  stroke(drawing, drawing);
});

pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const e of events.length ? events : [event]) {
    const next = point(e);
    stroke(drawing, next);
    drawing = next;
  }
});

function endStroke() {
  if (!drawing) return;
  drawing = null;
  predictPad();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

pad.addEventListener("keydown", (event) => {
  const moves = { ArrowUp: [0, -1], ArrowDown: [0, 1], ArrowLeft: [-1, 0], ArrowRight: [1, 0] };
  if (event.key === "Escape" || event.key === "Delete" || event.key === "Backspace") {
    clearPad();
  } else if (moves[event.key]) {
    const [dx, dy] = moves[event.key];
    const next = {
      x: Math.min(pad.width, Math.max(0, cursor.x + dx * STEP)),
      y: Math.min(pad.height, Math.max(0, cursor.y + dy * STEP)),
    };
    stroke(cursor, next);
    cursor = next;
    predictSoon();
  } else {
    return;
  }
  event.preventDefault();
});

let timer = null;
function predictSoon() {
  clearTimeout(timer);
  timer = setTimeout(predictPad, 300);
}

function predictPad() {
  if (!inked) return;
  const ticket = ++asked; // now, so that answers to earlier strokes are dropped from here on
  setState("reading");
  pad.toBlob((blob) => blob && blob.arrayBuffer().then((bytes) => predict(bytes, ticket)), "image/png");
}

// "reading", "answered", "refused" or "idle": for people via the status line, for tests via data-state.
function setState(state) {
  document.body.dataset.state = state;
  if (state === "reading") say("Reading…");
}

function base64(bytes) {
  const view = new Uint8Array(bytes);
  let text = "";
  for (let i = 0; i < view.length; i += 0x8000) {
    text += String.fromCharCode.apply(null, view.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

async function predict(bytes, mine = ++asked) {
  setState("reading");
  let answer;
  try {
    const response = await fetch(`${API}:predict`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ signature_name: "serving_bytes", instances: [{ b64: base64(bytes) }] }),
    });
    answer = await response.json();
    if (!response.ok) throw new Error(answer.error || `HTTP ${response.status}`);
  } catch (error) {
    if (mine === asked) {
      setState("refused");
      say(`The server refused it: ${error.message}`, true);
    }
    return;
  }
  if (mine !== asked) return;
  setState("answered");
  say("");
  showAnswer(answer.predictions[0]);
}

function showAnswer(row) {
  const probabilities = row ? row.probabilities : new Array(10).fill(0);
  // Declined: the model was trained to be unsure of letters, shapes and scribbles (not_a_digit).
  const declined = row && row.not_a_digit === true;
  const blank = row && !declined && (row.blank === true || row.class_id < 0);
  const top = row && !blank && !declined ? row.class_id : -1;
  // A model trained on another data set answers with its class's name too (the `class_name` output).
  const name = top >= 0 && row.class_name ? row.class_name : String(top);
  const percent = top >= 0 ? `${(probabilities[top] * 100).toFixed(1)}%` : "";
  const unsure = top >= 0 && probabilities[top] < SURE;
  digitOut.textContent = top >= 0 ? name : row ? "–" : "?";
  digitOut.classList.toggle("none", top < 0);
  digitOut.classList.toggle("unsure", unsure);
  if (!row) confidence.textContent = "Draw a digit to see what the model reads.";
  else if (blank) confidence.textContent = "No digit found: draw one larger or with more ink.";
  else if (declined) confidence.textContent = "Not a digit: that does not look like any digit 0-9.";
  else if (unsure) confidence.textContent = `Not sure: perhaps a ${name} (${percent}).`;
  else confidence.textContent = `${percent} sure it is a ${name}.`;
  bars.replaceChildren(
    ...probabilities.map((p, d) => {
      const item = document.createElement("li");
      item.className = d === top ? "top" : "";
      item.setAttribute("aria-label", `${d}: ${(p * 100).toFixed(1)} percent`);
      item.innerHTML =
        `<span class="label">${d}</span><span class="track"><span class="fill" style="width:${(p * 100).toFixed(1)}%">` +
        `</span></span><span class="pct">${row ? (p * 100).toFixed(1) + "%" : ""}</span>`;
      return item;
    })
  );
  showSeen(row && row.image);
}

function showSeen(image) {
  // Shown only where the model returns the image it read (an `image` output).
  document.getElementById("seen-figure").hidden = !image;
  if (!image) return;
  const pixels = seen.getContext("2d").createImageData(28, 28);
  image.flat(2).forEach((v, i) => {
    pixels.data.set([v, v, v, 255], i * 4);
  });
  seen.getContext("2d").putImageData(pixels, 0, 0);
}

async function useFile(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) {
    say(`${file.name || "That file"} is not an image: choose a PNG or JPEG of a digit.`, true);
    return;
  }
  const ticket = ++asked;
  setState("reading");
  const bytes = await file.arrayBuffer();
  try {
    const bitmap = await createImageBitmap(file);
    const scale = Math.min(pad.width / bitmap.width, pad.height / bitmap.height);
    const w = bitmap.width * scale;
    const h = bitmap.height * scale;
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, pad.width, pad.height);
    ctx.drawImage(bitmap, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
  } catch (error) {
    // The browser cannot show it; the server may still read it.
  }
  inked = false; // drawing on a photo starts afresh
  predict(bytes, ticket);
}

document.getElementById("clear").addEventListener("click", clearPad);
document.getElementById("file").addEventListener("change", (event) => {
  useFile(event.target.files[0]);
  event.target.value = "";
});
pad.addEventListener("dragover", (event) => {
  event.preventDefault();
  pad.classList.add("dragging");
});
pad.addEventListener("dragleave", () => pad.classList.remove("dragging"));
pad.addEventListener("drop", (event) => {
  event.preventDefault();
  pad.classList.remove("dragging");
  useFile(event.dataTransfer.files[0]);
});
document.addEventListener("paste", (event) => {
  const item = [...event.clipboardData.items].find((i) => i.kind === "file");
  if (item) {
    event.preventDefault();
    useFile(item.getAsFile());
  }
});

async function showModel() {
  const info = document.getElementById("model-info");
  try {
    const response = await fetch(API);
    const body = await response.json();
    if (!response.ok) throw new Error(body.error);
    const live = body.model_version_status.find((v) => v.state === "AVAILABLE");
    info.textContent = live ? `Model mnist, version ${live.version}` : "Model mnist: no version available";
  } catch (error) {
    info.textContent = `Model mnist: not available (${error.message})`;
  }
}

clearPad();
showModel();
document.body.dataset.ready = "true";
