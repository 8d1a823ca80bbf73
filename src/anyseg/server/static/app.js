// anyseg studio: the page. Plain JavaScript, no build step, no network beyond this server.
//
// The server holds the truth (sessions, prompts, masks); this page draws it. Masks arrive as COCO
// RLEs and are painted on a canvas over the image, each in its object's colour with an outline.
"use strict";

const $ = (id) => document.getElementById(id);

const state = {
  status: null,
  session: null, // SessionInfo of the open session
  project: null, // ProjectInfo
  objects: new Map(), // obj_id -> ObjectInfo
  selected: null, // obj_id
  tool: "positive",
  frame: 0,
  masks: new Map(), // frame -> Map(obj_id -> MaskRecord)
  present: new Map(), // obj_id -> Set of frames where its mask is not empty
  tracking: null, // {controller} while a propagation streams
  queue: Promise.resolve(), // prompts are sent one after another, in order
  drag: null, // a box being drawn
};

// ---------------------------------------------------------------------------- API
class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body, form) {
  const options = { method, headers: {} };
  if (form) {
    options.body = form;
  } else if (body !== undefined) {
    options.body = JSON.stringify(body);
    options.headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new ApiError(0, "network", "the studio server cannot be reached: is `anyseg serve` still running?");
  }
  if (!response.ok) throw await errorOf(response);
  return response.status === 204 ? null : response.json();
}

async function errorOf(response) {
  let data = {};
  try {
    data = await response.json();
  } catch (err) {
    data = {};
  }
  return new ApiError(response.status, data.error || "http_error", data.detail || response.statusText);
}

// A call on the open session; an expired session (evicted while idle) is reopened once.
async function sessionApi(method, suffix, body) {
  try {
    return await api(method, `/api/sessions/${state.session.session_id}${suffix}`, body);
  } catch (err) {
    if (err.code !== "unknown_session" || !state.project) throw err;
    const info = await api("POST", `/api/projects/${state.project.id}/sessions`);
    state.session = info;
    return api(method, `/api/sessions/${info.session_id}${suffix}`, body);
  }
}

// ---------------------------------------------------------------------------- feedback
// What the page waits for, shown only once it has waited BUSY_DELAY_MS: a click's answer comes
// sooner, and a spinner that flashes at each click also takes CPU from it (every animation frame
// is composited). `body.working` marks any wait at once.
const BUSY_DELAY_MS = 250;
let busyCount = 0;
let busyTimer = null;
async function withBusy(text, promise) {
  busyCount += 1;
  document.body.classList.add("working");
  $("busy-text").textContent = text;
  if (busyTimer === null && $("busy").hidden) {
    busyTimer = setTimeout(() => {
      busyTimer = null;
      $("busy").hidden = busyCount === 0;
    }, BUSY_DELAY_MS);
  }
  try {
    return await promise;
  } finally {
    busyCount -= 1;
    if (busyCount === 0) {
      clearTimeout(busyTimer);
      busyTimer = null;
      $("busy").hidden = true;
      document.body.classList.remove("working");
    }
  }
}

function toast(message, kind = "info") {
  const el = document.createElement("div");
  el.className = `toast ${kind}`;
  el.textContent = message;
  $("toasts").append(el);
  setTimeout(() => el.remove(), kind === "error" ? 9000 : 4000);
}

function showError(err) {
  toast(err.message || String(err), "error");
}

// ---------------------------------------------------------------------------- status
async function loadStatus() {
  try {
    state.status = await api("GET", "/api/status");
  } catch (err) {
    showError(err);
    return;
  }
  const model = state.status.model;
  const pill = $("model-pill");
  pill.className = `pill ${model.state}`;
  const served = model.precision === "fp32" ? model.name : `${model.name} · ${model.precision}`;
  pill.textContent = { ready: `● ${served}`, loading: `◌ loading ${served}…`, unavailable: `● ${served} unavailable` }[model.state];
  pill.title = model.detail || `the served model: ${model.name}, computing in ${model.precision}`;
  const banner = $("model-banner");
  banner.hidden = model.state !== "unavailable";
  if (model.state === "unavailable") {
    $("model-banner-title").textContent = model.download_url
      ? `The weights of ${model.name} are missing.`
      : `The model ${model.name} is not available.`;
    $("model-banner-detail").textContent = model.detail || "";
    $("model-banner-download").hidden = !model.download_url;
    if (model.download_url) {
      $("model-download-url").textContent = model.download_url;
      $("model-download-url").href = model.download_url;
      $("model-save-as").textContent = model.save_as;
    }
  }
  $("concept-reason").textContent = state.status.concepts.reason;
  if (model.state === "loading") setTimeout(loadStatus, 1500);
}

// ---------------------------------------------------------------------------- library
async function loadGallery() {
  let gallery;
  try {
    gallery = await api("GET", "/api/gallery");
  } catch (err) {
    showError(err);
    return;
  }
  const box = $("gallery");
  box.replaceChildren();
  for (const sample of gallery.samples) {
    const button = document.createElement("button");
    button.className = "sample";
    button.dataset.sample = sample.id;
    button.title = `${sample.title}: ${sample.cached ? "cached" : "downloaded on first use from " + sample.url}`;
    const thumb = document.createElement("div");
    thumb.className = "thumb";
    thumb.textContent = sample.kind === "video" ? "▶" : "◩";
    const preview = new Image();
    preview.alt = "";
    preview.onload = () => thumb.replaceChildren(preview);
    preview.src = `/api/gallery/${sample.id}/thumbnail`;
    const label = document.createElement("div");
    label.className = "label";
    label.innerHTML = `<span></span><small>${sample.kind}</small>`;
    label.firstChild.textContent = sample.title;
    button.append(thumb, label);
    button.addEventListener("click", () => openSample(sample));
    box.append(button);
  }
  const offline = $("gallery-offline");
  offline.hidden = !gallery.offline;
  offline.textContent = gallery.offline ? `Offline: ${gallery.detail}` : "";
}

async function loadProjects() {
  let projects;
  try {
    projects = await api("GET", "/api/projects");
  } catch (err) {
    showError(err);
    return;
  }
  const list = $("projects");
  list.replaceChildren();
  for (const project of projects) {
    const li = document.createElement("li");
    li.dataset.project = project.id;
    li.classList.toggle("active", state.project?.id === project.id);
    const when = new Date(project.updated * 1000).toLocaleString([], { dateStyle: "short", timeStyle: "short" });
    const what = project.media.kind === "video" ? `${project.media.num_frames} frames` : `${project.media.width}×${project.media.height}`;
    li.innerHTML = `<span class="kind"></span><div class="meta"><div></div><small></small></div>
                    <button class="ghost" title="Delete this project">✕</button>`;
    li.querySelector(".kind").textContent = project.media.kind === "video" ? "▶" : "◩";
    li.querySelector(".meta div").textContent = project.name;
    li.querySelector(".meta small").textContent = `${what} · ${project.num_objects} obj · ${when}`;
    li.addEventListener("click", () => openProject(project.id));
    li.querySelector("button").addEventListener("click", (event) => {
      event.stopPropagation();
      deleteProject(project);
    });
    list.append(li);
  }
  $("projects-empty").hidden = projects.length > 0;
}

async function openSample(sample) {
  try {
    const info = await withBusy(sample.cached ? `Opening ${sample.title}…` : `Downloading ${sample.title}…`,
      api("POST", `/api/gallery/${sample.id}/sessions`));
    await openSession(info);
  } catch (err) {
    showError(err);
  }
  loadGallery();
  loadProjects();
}

async function uploadFile(file) {
  if (!file) return;
  const form = new FormData();
  form.append("file", file);
  try {
    const info = await withBusy(`Uploading ${file.name}…`, api("POST", "/api/sessions", undefined, form));
    await openSession(info);
  } catch (err) {
    showError(err);
  }
  loadProjects();
}

async function openProject(projectId) {
  try {
    const info = await withBusy("Opening…", api("POST", `/api/projects/${projectId}/sessions`));
    await openSession(info);
  } catch (err) {
    showError(err);
    if (err.code === "unknown_project") history.replaceState(null, "", location.pathname);
  }
  loadProjects();
}

async function deleteProject(project) {
  if (!confirm(`Delete “${project.name}” and all its annotations?`)) return;
  try {
    await api("DELETE", `/api/projects/${project.id}`);
  } catch (err) {
    showError(err);
    return;
  }
  if (state.project?.id === project.id) closeWorkspace();
  loadProjects();
}

// ---------------------------------------------------------------------------- session
const isVideo = () => state.project?.media.kind === "video";

async function openSession(info) {
  if (state.tracking) state.tracking.controller.abort(); // closing the stream stops that tracking
  state.session = info;
  state.project = info.project;
  state.objects = new Map(info.objects.map((o) => [o.obj_id, o]));
  state.selected = info.objects.length ? info.objects[0].obj_id : null;
  state.masks = new Map();
  state.present = new Map(info.objects.map((o) => [o.obj_id, new Set()]));
  for (const track of info.tracks) {
    const frames = state.present.get(track.obj_id) || new Set();
    for (const [a, b] of track.ranges) for (let f = a; f <= b; f++) frames.add(f);
    state.present.set(track.obj_id, frames);
  }
  frameImages.clear();
  history.replaceState(null, "", `#project=${info.project.id}`);
  const media = info.project.media;
  clearPreview();
  for (const id of ["frame-canvas", "mask-canvas", "preview-canvas", "prompt-canvas"]) {
    $(id).width = media.width;
    $(id).height = media.height;
  }
  $("empty").hidden = true;
  $("canvas-wrap").hidden = false;
  $("project-name").disabled = false;
  $("project-name").value = info.project.name;
  $("new-object").disabled = false;
  $("video-panel").hidden = !isVideo();
  $("scrubber").max = media.num_frames - 1;
  layoutCanvas();
  buildFilmstrip();
  renderObjects();
  renderExports();
  await showFrame(0);
  $("prompt-canvas").focus();
}

function closeWorkspace() {
  clearPreview();
  Object.assign(state, { session: null, project: null, objects: new Map(), selected: null, masks: new Map(), present: new Map() });
  history.replaceState(null, "", location.pathname);
  $("empty").hidden = false;
  $("canvas-wrap").hidden = true;
  $("video-panel").hidden = true;
  $("project-name").value = "";
  $("project-name").disabled = true;
  $("new-object").disabled = true;
  renderObjects();
  renderExports();
}

// ---------------------------------------------------------------------------- frames
const frameImages = new Map(); // frame -> Promise<HTMLImageElement>, a small LRU

function frameImage(frame, maxSide) {
  const key = maxSide ? `${frame}@${maxSide}` : frame;
  let promise = frameImages.get(key);
  if (promise) {
    frameImages.delete(key);
  } else {
    promise = new Promise((resolve, reject) => {
      const image = new Image();
      image.onload = () => resolve(image);
      image.onerror = () => reject(new Error(`frame ${frame} could not be loaded`));
      image.src = `/api/projects/${state.project.id}/frames/${frame}${maxSide ? `?max_side=${maxSide}` : ""}`;
    });
    promise.catch(() => frameImages.delete(key));
  }
  frameImages.set(key, promise);
  while (frameImages.size > 48) frameImages.delete(frameImages.keys().next().value);
  return promise;
}

async function frameMasks(frame) {
  const projectId = state.project.id;
  if (!state.masks.has(frame)) {
    const result = await api("GET", `/api/projects/${projectId}/masks/${frame}`);
    if (state.project?.id !== projectId) return new Map(); // another project was opened meanwhile
    if (!state.masks.has(frame)) setFrameMasks(frame, result.masks);
  }
  return state.masks.get(frame);
}

// Replace the masks known for a frame (every object's), keeping `present` in step.
function setFrameMasks(frame, records) {
  const byObject = new Map(records.map((r) => [r.obj_id, r]));
  state.masks.set(frame, byObject);
  for (const [objId, frames] of state.present) {
    if (byObject.get(objId)?.area > 0) frames.add(frame);
    else frames.delete(frame);
  }
  for (const record of records) {
    if (!state.present.has(record.obj_id) && record.area > 0) state.present.set(record.obj_id, new Set([frame]));
  }
}

// Forget an object's masks on every frame (after it was cleared or deleted).
function dropObjectMasks(objId) {
  for (const masks of state.masks.values()) masks.delete(objId);
  state.present.set(objId, new Set());
}

let showToken = 0;
async function showFrame(frame) {
  if (!state.project) return;
  const n = state.project.media.num_frames;
  frame = Math.max(0, Math.min(n - 1, frame));
  state.frame = frame;
  $("frame-label").textContent = `${frame + 1} / ${n}`;
  $("scrubber").value = frame;
  markFilmstrip();
  drawTracks();
  renderExports();
  const token = ++showToken;
  try {
    const [image] = await Promise.all([frameImage(frame), frameMasks(frame)]);
    if (token !== showToken) return;
    $("frame-canvas").getContext("2d").drawImage(image, 0, 0);
    renderMasks();
    renderPrompts();
    renderObjects();
  } catch (err) {
    if (token === showToken) showError(err);
  }
  if (isVideo() && frame + 1 < n) frameImage(frame + 1).catch(() => {});
}

function layoutCanvas() {
  if (!state.project) return;
  const media = state.project.media;
  const stage = $("stage").getBoundingClientRect();
  const scale = Math.min((stage.width - 32) / media.width, (stage.height - 32) / media.height, 4);
  const wrap = $("canvas-wrap");
  wrap.style.width = `${Math.max(1, media.width * scale)}px`;
  wrap.style.height = `${Math.max(1, media.height * scale)}px`;
  renderPrompts();
  drawTracks();
}

// ---------------------------------------------------------------------------- masks
// Decode a COCO RLE (compressed counts, column-major runs) into a row-major 0/1 array and the
// bounding box of its ones, [x0, y0, x1, y1] inclusive (null when there are none).
function decodeRle(rle) {
  const [h, w] = rle.size;
  const s = rle.counts;
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0;
    let k = 0;
    let more = 1;
    while (more) {
      const c = s.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = c & 0x20;
      p += 1;
      k += 1;
      if (!more && c & 0x10) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  const mask = new Uint8Array(h * w);
  let box = null;
  let pos = 0;
  for (let i = 0; i < counts.length; i++) {
    const end = pos + counts[i];
    if (i % 2 === 1 && end > pos) {
      const first = Math.floor(pos / h);
      const last = Math.floor((end - 1) / h);
      const top = first === last ? pos - first * h : 0; // a run over several columns spans every row
      const bottom = first === last ? end - 1 - first * h : h - 1;
      box = box ? [Math.min(box[0], first), Math.min(box[1], top), last, Math.max(box[3], bottom)]
        : [first, top, last, bottom];
      for (let j = pos; j < end;) {
        const x = Math.floor(j / h);
        const stop = Math.min(end, (x + 1) * h);
        for (let at = (j - x * h) * w + x; j < stop; j++, at += w) mask[at] = 1;
      }
    }
    pos = end;
  }
  return { mask, box };
}

// A mask record as drawn, made once per record (a new mask comes as a new record) and kept for
// the last LAYERS_KEPT records drawn: the bounding box of its pixels, [x0, y0, x1, y1], and over
// that box, row by row, 0 outside the mask, 1 inside, 2 on its outline `thickness` wide.
const LAYERS_KEPT = 256;
const layers = new Map();
function maskLayer(rle, thickness) {
  let layer = layers.get(rle);
  if (layer && layer.thickness === thickness) {
    layers.delete(rle); // most recently drawn last
  } else {
    const { mask, box } = decodeRle(rle);
    layer = { box, kinds: box ? outline(mask, rle.size[1], box, thickness) : null, thickness };
  }
  layers.set(rle, layer);
  if (layers.size > LAYERS_KEPT) layers.delete(layers.keys().next().value);
  return layer;
}

// The outline width of masks drawn on a canvas of the media's size, in its pixels.
function outlineWidth(canvas) {
  return Math.max(1, Math.round(Math.max(canvas.width, canvas.height) / 600));
}

// An RGBA pixel as one element of a Uint32Array over image data (in the platform's byte order).
function rgbaPixel(r, g, b, a) {
  return new Uint32Array(new Uint8ClampedArray([r, g, b, a]).buffer)[0];
}

function rgbOf(hex) {
  return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
}

// The outline colour of a mask: a lighter shade of a dark colour, a darker one of a light colour
// (as anyseg.io.export.overlay draws it).
function outlineOf(rgb) {
  const luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2];
  return luma > 110 ? rgb.map((v) => v * 0.5) : rgb.map((v) => v + (255 - v) * 0.5);
}

// The mask canvas's pixels, kept from one drawing to the next, and the boxes drawn in them last:
// a drawing clears those boxes, draws the objects in theirs, and puts back on the canvas only the
// boxes of both. Outside them the pixels are clear, as they are on the canvas.
const maskPixels = { image: null, boxes: [] };
function renderMasks() {
  const canvas = $("mask-canvas");
  const { width: w, height: h } = canvas;
  const ctx = canvas.getContext("2d");
  if (maskPixels.image?.width !== w || maskPixels.image?.height !== h) {
    maskPixels.image = ctx.createImageData(w, h);
    maskPixels.boxes = [[0, 0, w - 1, h - 1]]; // what the canvas holds is not known: put it all
  }
  const pixels = new Uint32Array(maskPixels.image.data.buffer); // one RGBA pixel per element
  for (const b of maskPixels.boxes) {
    for (let y = b[1]; y <= b[3]; y++) pixels.fill(0, y * w + b[0], y * w + b[2] + 1);
  }
  const boxes = [];
  const masks = state.masks.get(state.frame) || new Map();
  const thickness = outlineWidth(canvas);
  for (const obj of [...state.objects.values()].sort((a, b) => a.obj_id - b.obj_id)) {
    const record = masks.get(obj.obj_id);
    if (!record || record.area === 0) continue;
    const { box, kinds } = maskLayer(record.rle, thickness);
    if (!box) continue;
    boxes.push(box);
    const rgb = rgbOf(obj.color);
    const fill = rgbaPixel(...rgb, obj.obj_id === state.selected ? 150 : 115);
    const edge = rgbaPixel(...outlineOf(rgb), 255);
    for (let y = box[1], k = 0; y <= box[3]; y++) {
      for (let i = y * w + box[0], end = y * w + box[2]; i <= end; i++, k++) {
        if (kinds[k]) pixels[i] = kinds[k] === 1 ? fill : edge;
      }
    }
  }
  for (const b of [...maskPixels.boxes, ...boxes]) {
    ctx.putImageData(maskPixels.image, 0, 0, b[0], b[1], b[2] - b[0] + 1, b[3] - b[1] + 1);
  }
  maskPixels.boxes = boxes;
}

// Over the mask's bounding box `box`, row by row: 0 outside the mask, 2 on its outline (pixels
// within `thickness` steps, up/down/left/right, of one outside the mask or the image), 1 inside.
// Each pixel's step count to the nearest outside pixel comes from two passes (down-right, then
// up-left), whatever the thickness; everything around the box is outside the mask.
function outline(mask, w, box, thickness) {
  const [x0, y0] = box;
  const bw = box[2] - x0 + 1;
  const bh = box[3] - y0 + 1;
  const steps = new Uint16Array(bw * bh);
  for (let y = 0, k = 0; y < bh; y++) {
    for (let x = 0, i = (y + y0) * w + x0; x < bw; x++, i++, k++) {
      if (mask[i]) steps[k] = Math.min(y ? steps[k - bw] : 0, x ? steps[k - 1] : 0) + 1;
    }
  }
  for (let y = bh - 1, k = bw * bh - 1; y >= 0; y--) {
    for (let x = bw - 1; x >= 0; x--, k--) {
      if (steps[k]) steps[k] = Math.min(steps[k], Math.min(y < bh - 1 ? steps[k + bw] : 0, x < bw - 1 ? steps[k + 1] : 0) + 1);
    }
  }
  const kinds = new Uint8Array(bw * bh);
  for (let k = 0; k < kinds.length; k++) kinds[k] = steps[k] === 0 ? 0 : steps[k] > thickness ? 1 : 2;
  return kinds;
}

// Clicks and boxes of every object on this frame, drawn at a constant on-screen size.
function renderPrompts() {
  const canvas = $("prompt-canvas");
  if (!state.project || !canvas.clientWidth) return;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const s = canvas.width / canvas.clientWidth;
  for (const obj of state.objects.values()) {
    const faded = obj.obj_id !== state.selected;
    ctx.globalAlpha = faded ? 0.55 : 1;
    for (const p of obj.prompts) {
      if (p.frame !== state.frame) continue;
      if (p.type === "box") {
        ctx.lineWidth = 2 * s;
        ctx.setLineDash([6 * s, 4 * s]);
        ctx.strokeStyle = "#ffffff";
        ctx.strokeRect(p.box[0], p.box[1], p.box[2] - p.box[0], p.box[3] - p.box[1]);
        ctx.setLineDash([]);
      } else {
        ctx.beginPath();
        ctx.arc(p.x, p.y, 6 * s, 0, 2 * Math.PI);
        ctx.fillStyle = p.positive ? "#35c46a" : "#ef5350";
        ctx.fill();
        ctx.lineWidth = 2 * s;
        ctx.strokeStyle = "#ffffff";
        ctx.stroke();
      }
    }
  }
  ctx.globalAlpha = 1;
  if (state.drag?.current) {
    const [x0, y0] = state.drag.start;
    const [x1, y1] = state.drag.current;
    ctx.lineWidth = 2 * s;
    ctx.strokeStyle = "#4f8cff";
    ctx.fillStyle = "rgba(79, 140, 255, 0.12)";
    ctx.fillRect(x0, y0, x1 - x0, y1 - y0);
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
  }
}

// ---------------------------------------------------------------------------- prompting
function mediaPoint(event) {
  const canvas = $("prompt-canvas");
  const r = canvas.getBoundingClientRect();
  const x = ((event.clientX - r.left) / r.width) * canvas.width;
  const y = ((event.clientY - r.top) / r.height) * canvas.height;
  return [Math.max(0, Math.min(canvas.width, x)), Math.max(0, Math.min(canvas.height, y))];
}

function enqueue(task) {
  state.queue = state.queue.then(task).catch(showError);
  return state.queue;
}

async function ensureObject() {
  if (state.selected !== null && state.objects.has(state.selected)) return state.objects.get(state.selected);
  return createObject();
}

async function createObject() {
  const obj = await sessionApi("POST", "/objects", {});
  state.objects.set(obj.obj_id, obj);
  state.present.set(obj.obj_id, new Set());
  state.selected = obj.obj_id;
  renderObjects();
  renderExports();
  drawTracks();
  loadProjects();
  return obj;
}

function submitPrompt(prompt) {
  if (!state.session) return;
  if (state.tracking) {
    toast("Tracking is running: wait for it to finish, or cancel it (Esc).");
    return;
  }
  enqueue(async () => {
    const obj = await ensureObject();
    prompt.frame = state.frame;
    obj.prompts.push(prompt); // drawn at once; replaced by the server's answer
    renderPrompts();
    try {
      applyResult(await withBusy("Segmenting…", sessionApi("POST", `/objects/${obj.obj_id}/prompts`, prompt)));
    } catch (err) {
      obj.prompts.pop();
      renderPrompts();
      clearPreview();
      throw err;
    }
  });
}

// ---------------------------------------------------------------------------- hover preview
// On an image, the mask a click would give is shown under the pointer before the click (as the
// official SAM demo does). The page asks the server for it where the pointer is: one request
// at a time, for the latest position, at most one per PREVIEW_INTERVAL_MS, none while a prompt
// is on its way. An answer to the object, another object or tool, or the pointer leaving the
// image clears it; a new tool or object asks again where the pointer is (an answer does not:
// the next move does). H turns it off and on (the choice is remembered).
const PREVIEW_INTERVAL_MS = 40;
const preview = {
  on: localStorage.getItem("anyseg.preview") !== "off",
  at: null, // the pointer, in media pixels, while it is over the image
  pending: false,
  timer: null,
  last: -Infinity, // when the last request was sent (performance.now())
  epoch: 0, // a clearing makes every answer asked for before it stale
  asked: null, // the last position asked about, and its epoch
  box: null, // where the shown preview's pixels are on its canvas
};

function previewWanted() {
  return preview.on && state.session !== null && !isVideo() && state.tool !== "box" && !state.drag && busyCount === 0;
}

function hoverAt(point) {
  preview.at = point;
  if (!previewWanted() || preview.pending || preview.timer !== null) return;
  preview.timer = setTimeout(requestPreview, Math.max(0, preview.last + PREVIEW_INTERVAL_MS - performance.now()));
}

async function requestPreview() {
  preview.timer = null;
  const at = preview.at;
  if (!at || !previewWanted()) return;
  const epoch = preview.epoch;
  if (preview.asked && preview.asked.epoch === epoch && preview.asked.at.every((v, i) => v === at[i])) return;
  preview.asked = { at, epoch };
  const objId = state.selected !== null && state.objects.has(state.selected) ? state.selected : null;
  preview.pending = true;
  preview.last = performance.now();
  try {
    const body = { obj_id: objId, frame: state.frame, x: at[0], y: at[1], positive: state.tool !== "negative" };
    const result = await sessionApi("POST", "/preview", body);
    if (epoch === preview.epoch && previewWanted()) drawPreview(result.rle, objId);
  } catch (err) {
    clearPreview(); // not shown; a click there says what is wrong
  } finally {
    preview.pending = false;
  }
  if (preview.at && preview.at !== at) hoverAt(preview.at);
}

function drawPreview(rle, objId) {
  const canvas = $("preview-canvas");
  const ctx = canvas.getContext("2d");
  erasePreview();
  const { mask, box } = decodeRle(rle); // not maskLayer's: previews would push the masks' layers out
  preview.box = box;
  if (!box) return;
  const thickness = outlineWidth(canvas);
  const kinds = outline(mask, rle.size[1], box, thickness);
  const obj = objId !== null && state.objects.get(objId);
  const rgb = obj ? rgbOf(obj.color) : [79, 140, 255];
  const image = ctx.createImageData(box[2] - box[0] + 1, box[3] - box[1] + 1);
  const pixels = new Uint32Array(image.data.buffer);
  const fill = rgbaPixel(...rgb, 90);
  const edge = rgbaPixel(255, 255, 255, 230);
  for (let k = 0; k < kinds.length; k++) if (kinds[k]) pixels[k] = kinds[k] === 1 ? fill : edge;
  ctx.putImageData(image, box[0], box[1]);
}

function clearPreview() {
  preview.epoch += 1;
  clearTimeout(preview.timer);
  preview.timer = null;
  erasePreview();
}

// Clear the shown preview's pixels.
function erasePreview() {
  const b = preview.box;
  if (b) $("preview-canvas").getContext("2d").clearRect(b[0], b[1], b[2] - b[0] + 1, b[3] - b[1] + 1);
  preview.box = null;
}

function togglePreview() {
  preview.on = !preview.on;
  localStorage.setItem("anyseg.preview", preview.on ? "on" : "off");
  $("preview-toggle").classList.toggle("active", preview.on);
  $("preview-toggle").setAttribute("aria-pressed", String(preview.on));
  clearPreview();
  if (preview.at) hoverAt(preview.at);
  toast(preview.on ? "Preview on hover: on (H)" : "Preview on hover: off (H)");
}

function applyResult(result) {
  clearPreview(); // the object's own mask replaces it
  state.objects.set(result.object.obj_id, result.object);
  if (result.object.prompts.length === 0) dropObjectMasks(result.object.obj_id);
  setFrameMasks(result.frame, result.masks);
  if (result.frame === state.frame) {
    renderMasks();
    renderPrompts();
  }
  renderObjects();
  drawTracks();
}

function undo() {
  if (!state.session || state.selected === null) return;
  enqueue(async () => {
    applyResult(await withBusy("Undoing…", sessionApi("POST", `/objects/${state.selected}/undo`, { frame: state.frame })));
  });
}

function clearObject() {
  if (!state.session || state.selected === null) return;
  enqueue(async () => {
    const result = await withBusy("Clearing…", sessionApi("POST", `/objects/${state.selected}/clear`, { frame: state.frame }));
    dropObjectMasks(result.object.obj_id);
    applyResult(result);
  });
}

function chooseCandidate(index) {
  const obj = state.objects.get(state.selected);
  if (!obj || index >= obj.candidates.length) return;
  enqueue(async () => {
    applyResult(await withBusy("Choosing…", sessionApi("PATCH", `/objects/${obj.obj_id}`, { choice: index, frame: state.frame })));
  });
}

function selectObject(objId) {
  state.selected = objId;
  clearPreview();
  if (preview.at) hoverAt(preview.at);
  renderObjects();
  renderMasks();
  renderPrompts();
  renderExports();
}

function setTool(tool) {
  state.tool = tool;
  clearPreview();
  if (preview.at) hoverAt(preview.at);
  for (const button of document.querySelectorAll(".tool")) {
    button.classList.toggle("active", button.dataset.tool === tool);
    button.setAttribute("aria-checked", String(button.dataset.tool === tool));
  }
}

// ---------------------------------------------------------------------------- objects panel
function renderObjects() {
  const list = $("objects");
  list.replaceChildren();
  for (const obj of state.objects.values()) {
    const li = document.createElement("li");
    li.dataset.obj = obj.obj_id;
    li.classList.toggle("selected", obj.obj_id === state.selected);
    li.innerHTML = `<span class="swatch"></span><input type="text" maxlength="80" aria-label="Object name">
                    <small></small><button class="ghost" title="Delete this object">✕</button>`;
    li.querySelector(".swatch").style.background = obj.color;
    const name = li.querySelector("input");
    name.value = obj.name;
    name.addEventListener("change", () => renameObject(obj.obj_id, name.value.trim()));
    name.addEventListener("keydown", (event) => event.key === "Enter" && name.blur());
    const frames = state.present.get(obj.obj_id)?.size || 0;
    const mask = state.masks.get(state.frame)?.get(obj.obj_id);
    li.querySelector("small").textContent = isVideo() ? `${frames} fr` : mask ? `${mask.area.toLocaleString()} px` : "";
    li.addEventListener("click", () => selectObject(obj.obj_id));
    li.querySelector("button").addEventListener("click", (event) => {
      event.stopPropagation();
      deleteObject(obj.obj_id);
    });
    list.append(li);
  }
  $("objects-empty").hidden = state.objects.size > 0;
  renderCandidates();
}

function renderCandidates() {
  const box = $("candidates");
  const obj = state.objects.get(state.selected);
  const candidates = !isVideo() && obj ? obj.candidates : [];
  box.hidden = candidates.length === 0;
  box.replaceChildren();
  if (!candidates.length) return;
  const label = document.createElement("span");
  label.textContent = "Mask";
  box.append(label);
  for (const c of candidates) {
    const button = document.createElement("button");
    button.className = "small";
    button.classList.toggle("chosen", c.index === obj.choice);
    button.title = `Candidate ${c.index + 1}, predicted IoU ${c.score.toFixed(2)} (${c.index + 1})`;
    button.textContent = `${c.index + 1} · ${c.score.toFixed(2)}`;
    button.addEventListener("click", () => chooseCandidate(c.index));
    box.append(button);
  }
}

async function renameObject(objId, name) {
  if (!name) return;
  try {
    applyResult(await sessionApi("PATCH", `/objects/${objId}`, { name, frame: state.frame }));
  } catch (err) {
    showError(err);
  }
}

function deleteObject(objId) {
  enqueue(async () => {
    await sessionApi("DELETE", `/objects/${objId}`);
    state.objects.delete(objId);
    dropObjectMasks(objId);
    state.present.delete(objId);
    if (state.selected === objId) state.selected = state.objects.size ? [...state.objects.keys()][0] : null;
    loadProjects();
    renderObjects();
    renderMasks();
    renderPrompts();
    drawTracks();
    renderExports();
  });
}

function selectNextObject() {
  const ids = [...state.objects.keys()];
  if (!ids.length) return;
  selectObject(ids[(ids.indexOf(state.selected) + 1) % ids.length]);
}

// ---------------------------------------------------------------------------- video
function buildFilmstrip() {
  const strip = $("filmstrip");
  strip.replaceChildren();
  if (!isVideo()) return;
  const n = state.project.media.num_frames;
  const count = Math.min(n, 48);
  const frames = [...new Set(Array.from({ length: count }, (_, i) => Math.round((i * (n - 1)) / Math.max(1, count - 1))))];
  const images = [];
  for (const frame of frames) {
    const button = document.createElement("button");
    button.dataset.frame = frame;
    button.title = `frame ${frame + 1}`;
    const image = document.createElement("img");
    image.alt = "";
    const label = document.createElement("small");
    label.textContent = frame + 1;
    button.append(image, label);
    button.addEventListener("click", () => showFrame(frame));
    strip.append(button);
    images.push([image, frame]);
  }
  // One thumbnail after another, in order: the server decodes the video forward.
  const projectId = state.project.id;
  (async () => {
    for (const [image, frame] of images) {
      if (state.project?.id !== projectId) return;
      await new Promise((resolve) => {
        image.onload = image.onerror = resolve;
        image.src = `/api/projects/${projectId}/frames/${frame}?max_side=96`;
      });
    }
  })();
}

function markFilmstrip() {
  let best = null;
  for (const button of $("filmstrip").children) {
    button.classList.remove("current");
    if (Number(button.dataset.frame) <= state.frame) best = button;
  }
  if (best) {
    best.classList.add("current");
    best.scrollIntoView({ block: "nearest", inline: "nearest" });
  }
}

function drawTracks() {
  const canvas = $("tracks");
  if (!isVideo() || !canvas.clientWidth) return;
  canvas.style.height = `${6 + 8 * Math.max(1, state.objects.size)}px`;
  const dpr = window.devicePixelRatio || 1;
  canvas.width = canvas.clientWidth * dpr;
  canvas.height = canvas.clientHeight * dpr;
  const ctx = canvas.getContext("2d");
  ctx.scale(dpr, dpr);
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  const n = state.project.media.num_frames;
  const fw = w / n;
  const objects = [...state.objects.values()];
  const row = (h - 6) / Math.max(1, objects.length);
  objects.forEach((obj, k) => {
    const y = 3 + k * row;
    ctx.fillStyle = obj.color;
    for (const f of state.present.get(obj.obj_id) || []) ctx.fillRect(f * fw, y, Math.max(fw, 1), row - 2);
    ctx.fillStyle = "#ffffff";
    for (const p of obj.prompts) ctx.fillRect(p.frame * fw + fw / 2 - 1, y - 1, 2, row);
  });
  ctx.fillStyle = "#4f8cff";
  ctx.fillRect(state.frame * fw + fw / 2 - 1, 0, 2, h);
}

function seekFromTracks(event) {
  const r = $("tracks").getBoundingClientRect();
  showFrame(Math.floor(((event.clientX - r.left) / r.width) * state.project.media.num_frames));
}

async function track(direction) {
  if (!isVideo() || state.tracking) return;
  await state.queue; // prompts first
  const controller = new AbortController();
  state.tracking = { controller, projectId: state.project.id };
  setTracking(true);
  $("progress-bar").style.width = "0";
  $("progress-text").textContent = "Starting…";
  try {
    let response = await fetch(`/api/sessions/${state.session.session_id}/propagate`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ direction }),
      signal: controller.signal,
    });
    if (response.status === 404) { // the session was evicted: reopen it and track
      await sessionApi("GET", "");
      response = await fetch(`/api/sessions/${state.session.session_id}/propagate`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ direction }), signal: controller.signal,
      });
    }
    if (!response.ok) throw await errorOf(response);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        onTrackEvent(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  } catch (err) {
    if (err.name !== "AbortError") {
      $("progress-text").textContent = "Tracking failed.";
      showError(err);
    }
  } finally {
    if (state.tracking?.controller === controller) {
      state.tracking = null;
      setTracking(false);
      renderObjects();
    }
  }
}

function onTrackEvent(block) {
  if (state.tracking?.projectId !== state.project?.id) return;
  const fields = {};
  for (const line of block.split("\n")) {
    const at = line.indexOf(": ");
    if (at > 0) fields[line.slice(0, at)] = line.slice(at + 2);
  }
  const data = JSON.parse(fields.data || "{}");
  if (fields.event === "start") {
    $("progress-text").textContent = `Tracking ${data.total} frames…`;
  } else if (fields.event === "frame") {
    setFrameMasks(data.frame, data.masks);
    $("progress-bar").style.width = `${(100 * data.done) / data.total}%`;
    $("progress-text").textContent = `Tracking ${data.pass}: frame ${data.frame + 1} (${data.done} / ${data.total})`;
    showFrame(data.frame);
  } else if (fields.event === "done") {
    $("progress-bar").style.width = data.cancelled ? `${(100 * data.done) / Math.max(1, data.total)}%` : "100%";
    $("progress-text").textContent = `${data.cancelled ? "Cancelled after" : "Tracked"} ${data.done} frames in ${data.seconds.toFixed(1)} s`;
    drawTracks();
  } else if (fields.event === "error") {
    $("progress-text").textContent = "Tracking failed.";
    toast(data.detail, "error");
  }
}

function setTracking(on) {
  $("track-cancel").hidden = !on;
  for (const id of ["track-backward", "track-both", "track-forward", "undo", "clear"]) $(id).disabled = on;
}

async function cancelTracking() {
  if (!state.tracking) return;
  $("progress-text").textContent = "Cancelling…";
  try {
    await sessionApi("POST", "/propagate/cancel");
  } catch (err) {
    state.tracking.controller.abort();
  }
}

// ---------------------------------------------------------------------------- exports
const EXPORTS = [
  { fmt: "mask.png", label: "PNG mask", note: "selected object", object: true },
  { fmt: "cutout.png", label: "Cut-out", note: "transparent PNG", object: true },
  { fmt: "overlay.png", label: "Overlay", note: "PNG" },
  { fmt: "coco.json", label: "COCO RLE", note: "JSON" },
  { fmt: "yolo.txt", label: "YOLO-seg", note: "polygons" },
  { fmt: "yolo.zip", label: "YOLO-seg", note: "all frames, zip", video: true },
  { fmt: "davis.zip", label: "DAVIS PNGs", note: "per frame, zip" },
  { fmt: "overlay.mp4", label: "MP4", note: "tracked overlay", video: true },
  { fmt: "overlay.gif", label: "GIF", note: "tracked overlay", video: true },
];

function exportUrl(item) {
  const params = new URLSearchParams({ frame: state.frame });
  if (item.object && state.selected !== null) params.set("obj_id", state.selected);
  return `/api/projects/${state.project.id}/export/${item.fmt}?${params}`;
}

function renderExports() {
  const box = $("exports");
  box.replaceChildren();
  for (const item of EXPORTS) {
    if (item.video && !isVideo()) continue;
    const link = document.createElement("a");
    link.dataset.fmt = item.fmt;
    link.href = state.project ? exportUrl(item) : "#";
    link.classList.toggle("disabled", !state.project);
    const frameNote = isVideo() && ["mask.png", "cutout.png", "overlay.png", "yolo.txt"].includes(item.fmt) ? ", this frame" : "";
    link.innerHTML = `<span></span><small></small>`;
    link.firstChild.textContent = item.label;
    link.lastChild.textContent = item.note + frameNote;
    link.addEventListener("click", (event) => {
      event.preventDefault();
      download(item);
    });
    box.append(link);
  }
}

// Fetch an export, then save it: errors (e.g. no mask yet) show as a message, not a file.
async function download(item) {
  if (!state.project) return;
  try {
    const response = await withBusy(`Exporting ${item.fmt}…`, fetch(exportUrl(item)));
    if (!response.ok) throw await errorOf(response);
    const name = /filename="?([^";]+)"?/.exec(response.headers.get("Content-Disposition") || "")?.[1] || item.fmt;
    const url = URL.createObjectURL(await response.blob());
    const link = document.createElement("a");
    link.href = url;
    link.download = name;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (err) {
    showError(err);
  }
}

// ---------------------------------------------------------------------------- wiring
function bindCanvas() {
  const canvas = $("prompt-canvas");
  canvas.addEventListener("contextmenu", (event) => event.preventDefault());
  canvas.addEventListener("pointerdown", (event) => {
    if (!state.project) return;
    canvas.setPointerCapture(event.pointerId);
    state.drag = { start: mediaPoint(event), button: event.button, current: null };
  });
  canvas.addEventListener("pointermove", (event) => {
    if (state.drag && state.tool === "box" && state.drag.button === 0) {
      state.drag.current = mediaPoint(event);
      renderPrompts();
    } else if (!state.drag) {
      hoverAt(mediaPoint(event));
    }
  });
  canvas.addEventListener("pointerleave", () => {
    preview.at = null;
    clearPreview();
  });
  canvas.addEventListener("pointerup", (event) => {
    const drag = state.drag;
    state.drag = null;
    if (!drag) return;
    const [x, y] = mediaPoint(event);
    if (state.tool === "box" && drag.button === 0) {
      renderPrompts();
      const [x0, y0] = drag.start;
      const s = canvas.width / canvas.clientWidth;
      if (Math.abs(x - x0) < 4 * s || Math.abs(y - y0) < 4 * s) {
        toast("Drag to draw a box around the object.");
        return;
      }
      submitPrompt({ type: "box", box: [Math.min(x0, x), Math.min(y0, y), Math.max(x0, x), Math.max(y0, y)] });
    } else if (drag.button === 0 || drag.button === 2) {
      submitPrompt({ type: "point", x, y, positive: drag.button === 0 && state.tool !== "negative" });
    }
  });
  new ResizeObserver(layoutCanvas).observe($("stage"));
}

function bindControls() {
  for (const button of document.querySelectorAll(".tool")) button.addEventListener("click", () => setTool(button.dataset.tool));
  $("undo").addEventListener("click", undo);
  $("preview-toggle").addEventListener("click", togglePreview);
  $("preview-toggle").classList.toggle("active", preview.on);
  $("preview-toggle").setAttribute("aria-pressed", String(preview.on));
  $("clear").addEventListener("click", clearObject);
  $("new-object").addEventListener("click", () => enqueue(createObject));
  $("help-button").addEventListener("click", () => $("help").showModal());
  $("model-retry").addEventListener("click", async () => {
    try {
      await api("POST", "/api/model/load");
    } catch (err) {
      showError(err);
    }
    loadStatus();
  });
  $("file-input").addEventListener("change", (event) => {
    uploadFile(event.target.files[0]);
    event.target.value = "";
  });
  for (const zone of [$("dropzone"), $("stage")]) {
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("over");
      uploadFile(event.dataTransfer.files[0]);
    });
  }
  $("project-name").addEventListener("change", async (event) => {
    const name = event.target.value.trim();
    if (!name || !state.project) return;
    try {
      state.project = await api("PATCH", `/api/projects/${state.project.id}`, { name });
      loadProjects();
    } catch (err) {
      showError(err);
    }
  });
  $("scrubber").addEventListener("input", (event) => showFrame(Number(event.target.value)));
  $("first-frame").addEventListener("click", () => showFrame(0));
  $("prev-frame").addEventListener("click", () => showFrame(state.frame - 1));
  $("next-frame").addEventListener("click", () => showFrame(state.frame + 1));
  $("last-frame").addEventListener("click", () => showFrame(Infinity));
  $("tracks").addEventListener("pointerdown", seekFromTracks);
  $("track-backward").addEventListener("click", () => track("backward"));
  $("track-both").addEventListener("click", () => track("both"));
  $("track-forward").addEventListener("click", () => track("forward"));
  $("track-cancel").addEventListener("click", cancelTracking);
}

function onKey(event) {
  const typing = event.target.matches("input[type=text], textarea");
  if (typing || $("help").open || !state.project && event.key !== "?") return;
  const key = event.key;
  const ctrl = event.ctrlKey || event.metaKey;
  const handlers = {
    p: () => setTool("positive"),
    n: () => setTool("negative"),
    b: () => setTool("box"),
    h: togglePreview,
    z: undo,
    c: () => !ctrl && clearObject(),
    o: () => enqueue(createObject),
    1: () => chooseCandidate(0),
    2: () => chooseCandidate(1),
    3: () => chooseCandidate(2),
    "?": () => $("help").showModal(),
    Tab: () => event.target.matches("body, #prompt-canvas") && selectNextObject(),
    ArrowLeft: () => showFrame(state.frame - (event.shiftKey ? 10 : 1)),
    ArrowRight: () => showFrame(state.frame + (event.shiftKey ? 10 : 1)),
    Home: () => showFrame(0),
    End: () => showFrame(Infinity),
    " ": () => track("both"),
    Escape: () => {
      if (state.drag) {
        state.drag = null;
        renderPrompts();
      } else {
        cancelTracking();
      }
    },
  };
  const handler = handlers[key.length === 1 ? key.toLowerCase() : key];
  if (!handler || (ctrl && key.toLowerCase() !== "z")) return;
  event.preventDefault();
  handler();
}

function init() {
  setTool("positive");
  bindCanvas();
  bindControls();
  document.addEventListener("keydown", onKey);
  renderExports();
  loadStatus();
  loadGallery();
  loadProjects();
  const match = /project=([\w-]+)/.exec(location.hash);
  if (match) openProject(match[1]);
}

init();
