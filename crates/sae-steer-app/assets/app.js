// sae-steer steering page: plain JavaScript, no build step.
// Talks to the JSON API of `sae_steer_app::server` (see its module docs).
'use strict';

const $ = (id) => document.getElementById(id);

const state = {
  info: null,
  id: null, // current image id ("12" or "u3")
  index: null, // example index, null for uploads
  grid: 16,
  selected: new Set(),
  sliders: new Map(), // latent -> slider value
  cards: new Map(), // latent -> card element
  pinned: new Set(), // latents shown whatever the selection
  imagePatches: new Map(), // latent -> values on the current image's patches
  exemplarImages: false,
  load: 0, // bumps on every image change; stale answers are dropped
  latentsTimer: null,
  latentsRun: 0,
  steerBusy: false,
  steerPending: false,
  busy: 0,
  errors: 0, // errors shown so far; a later success does not hide a newer one
};

// ---------- plumbing ----------

async function api(path, options) {
  const response = await fetch(path, options);
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    const message = body && body.error ? body.error : `${response.status} ${response.statusText}`;
    throw new Error(message);
  }
  return body;
}

function postJson(path, value) {
  return api(path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(value),
  });
}

function setStatus(text, kind) {
  const el = $('status');
  el.textContent = text;
  el.className = `status ${kind || ''}`;
  document.body.dataset.state = kind || 'ready';
  if (kind === 'error') state.errors += 1;
}

// Runs `work` with the page marked busy; errors become a visible status.
async function busy(message, work) {
  state.busy += 1;
  document.body.classList.add('busy');
  const errorsBefore = state.errors;
  setStatus(message, 'loading');
  try {
    const result = await work();
    if (state.busy === 1 && state.errors === errorsBefore) setStatus('Ready.', 'ready');
    return result;
  } catch (err) {
    setStatus(`Error: ${err.message}`, 'error');
    return undefined;
  } finally {
    state.busy -= 1;
    if (state.busy === 0) document.body.classList.remove('busy');
  }
}

function fmt(x, digits = 3) {
  if (x === null || x === undefined || Number.isNaN(x)) return 'n/a';
  if (x !== 0 && (Math.abs(x) < 1e-2 || Math.abs(x) >= 1e4)) return x.toExponential(2);
  return Number(x.toPrecision(digits)).toString();
}

function renderLegend(el, entries) {
  el.replaceChildren();
  for (const entry of entries || []) {
    const li = document.createElement('li');
    const swatch = document.createElement('span');
    swatch.className = 'swatch';
    swatch.style.backgroundColor = entry.color;
    li.append(swatch, `${entry.name} `);
    const share = document.createElement('span');
    share.className = 'muted';
    share.textContent = entry.share < 0.01 ? '<1%' : `${Math.round(entry.share * 100)}%`;
    li.append(share);
    li.title = `class ${entry.class}`;
    el.append(li);
  }
}

// ---------- the patch grid ----------

function buildGrid() {
  const grid = $('grid');
  grid.replaceChildren();
  grid.style.gridTemplateColumns = `repeat(${state.grid}, 1fr)`;
  for (let p = 0; p < state.grid * state.grid; p += 1) {
    const cell = document.createElement('button');
    cell.type = 'button';
    cell.className = 'cell';
    cell.dataset.patch = String(p);
    cell.title = `patch ${p} (row ${Math.floor(p / state.grid)}, column ${p % state.grid})`;
    cell.setAttribute('aria-pressed', 'false');
    cell.addEventListener('click', () => togglePatch(p, cell));
    grid.append(cell);
  }
}

function togglePatch(p, cell) {
  if (state.selected.has(p)) state.selected.delete(p);
  else state.selected.add(p);
  const on = state.selected.has(p);
  cell.classList.toggle('selected', on);
  cell.setAttribute('aria-pressed', String(on));
  scheduleLatents();
}

function clearSelection() {
  state.selected.clear();
  for (const cell of $('grid').children) {
    cell.classList.remove('selected');
    cell.setAttribute('aria-pressed', 'false');
  }
  scheduleLatents();
}

// Tints the grid cells by a latent's values on this image (null clears).
function showHeat(values) {
  const cells = $('grid').children;
  const max = values ? Math.max(...values, 1e-12) : 1;
  for (let p = 0; p < cells.length; p += 1) {
    const v = values ? Math.max(values[p] || 0, 0) / max : 0;
    cells[p].style.backgroundColor = v > 0 ? `rgba(255, 200, 0, ${(0.15 + 0.6 * v).toFixed(3)})` : '';
  }
}

// ---------- images ----------

function resetImageState() {
  state.selected.clear();
  state.sliders.clear();
  state.cards.clear();
  state.pinned.clear();
  state.imagePatches.clear();
  $('cards').replaceChildren();
  $('changed').textContent = '';
  $('latent-note').textContent = '';
}

function showImage(shown) {
  state.id = shown.id;
  state.index = shown.index;
  resetImageState();
  $('image').src = shown.image;
  $('name').textContent = shown.index === null ? shown.name : `#${shown.index} ${shown.name}`;
  if (shown.labels) {
    $('labels').src = shown.labels;
    $('labels').hidden = false;
    $('labels-none').hidden = true;
  } else {
    $('labels').removeAttribute('src');
    $('labels').hidden = true;
    $('labels-none').hidden = false;
  }
  renderLegend($('legend-true'), shown.legend);
  if (shown.index !== null) $('index').value = String(shown.index);
  buildGrid();
}

async function loadPrediction(load) {
  const p = await api(`/api/images/${state.id}/prediction`);
  if (load !== state.load) return false;
  if (p.grid !== state.grid) {
    state.grid = p.grid;
    buildGrid();
  }
  $('pred').src = p.image;
  $('edited').src = p.image;
  renderLegend($('legend-pred'), p.legend);
  renderLegend($('legend-edited'), p.legend);
  return true;
}

async function loadExample(index) {
  const n = state.info ? state.info.examples : 0;
  if (!Number.isInteger(index) || index < 0 || index >= n) {
    setStatus(`There is no example ${index}: this dataset has examples 0 to ${n - 1}.`, 'error');
    return false;
  }
  state.load += 1;
  const load = state.load;
  return busy(`Loading example ${index}…`, async () => {
    const shown = await api(`/api/examples/${index}`);
    if (load !== state.load) return false;
    showImage(shown);
    if (!(await loadPrediction(load))) return false;
    await refreshLatents();
    return true;
  });
}

// The upload's Content-Type from its first bytes: the server takes only
// image/png and image/jpeg (types a cross-site form cannot send), and a
// file's own type comes from its name, which may be missing or wrong.
async function imageType(file) {
  const head = new Uint8Array(await file.slice(0, 4).arrayBuffer());
  if (head[0] === 0x89 && head[1] === 0x50 && head[2] === 0x4e && head[3] === 0x47) return 'image/png';
  if (head[0] === 0xff && head[1] === 0xd8 && head[2] === 0xff) return 'image/jpeg';
  return null;
}

async function uploadFile(file) {
  const limit = state.info.limits.max_bytes;
  if (file.size > limit) {
    setStatus(`Error: ${file.name} is ${file.size} bytes; the limit is ${limit}.`, 'error');
    return;
  }
  const type = await imageType(file);
  if (!type) {
    setStatus(`Error: ${file.name} is not a JPEG or PNG image.`, 'error');
    return;
  }
  state.load += 1;
  const load = state.load;
  await busy(`Uploading ${file.name}…`, async () => {
    const shown = await api('/api/upload', {
      method: 'POST',
      headers: { 'Content-Type': type },
      body: file,
    });
    if (load !== state.load) return;
    showImage(shown);
    if (await loadPrediction(load)) await refreshLatents();
  });
}

// ---------- latents ----------

function scheduleLatents() {
  clearTimeout(state.latentsTimer);
  state.latentsTimer = setTimeout(() => refreshLatents(), 250);
}

async function refreshLatents() {
  if (!state.id) return;
  state.latentsRun += 1;
  const run = state.latentsRun;
  const id = state.id;
  const keep = new Set([...state.pinned]);
  for (const [latent, value] of state.sliders) if (value !== 0) keep.add(latent);
  await busy('Finding latents…', async () => {
    const report = await postJson(`/api/images/${id}/latents`, {
      patches: [...state.selected].sort((a, b) => a - b),
      top: 8,
      include: [...keep],
    });
    if (run !== state.latentsRun || id !== state.id) return;
    state.exemplarImages = report.exemplar_images;
    const where = state.selected.size ? `${state.selected.size} selected patches` : 'all patches';
    const hidden = state.info.stats ? `, ${report.hidden_frequent} frequent ones hidden` : '';
    $('latent-note').textContent = `${report.active} latents active on ${where}${hidden}`;
    renderCards(report.latents);
  });
}

function renderCards(latents) {
  const cards = $('cards');
  cards.replaceChildren();
  state.cards.clear();
  state.imagePatches.clear();
  if (!latents.length) {
    const p = document.createElement('p');
    p.className = 'muted';
    p.textContent = 'No latent fires on these patches (frequent latents are hidden).';
    cards.append(p);
  }
  for (const info of latents) cards.append(makeCard(info));
}

function makeCard(info) {
  const card = $('card-template').content.firstElementChild.cloneNode(true);
  card.dataset.latent = String(info.latent);
  card.querySelector('.latent-id').textContent = `Latent ${info.latent}`;
  const parts = [`Σ ${fmt(info.activation)}`];
  if (info.frequency !== null) parts.push(`freq ${fmt(info.frequency * 100)}%`);
  if (info.max_obs !== null) parts.push(`max_obs ${fmt(info.max_obs)}`);
  if (info.frequent) parts.push('frequent');
  card.querySelector('.stats').textContent = parts.join(' · ');
  const units = {
    stats: 'max_obs over the reference set',
    image: "this latent's largest value on this image (no statistics)",
    default: '1 (the latent is silent here and has no statistics)',
  };
  card.querySelector('.unit').textContent = `value = slider × ${fmt(info.unit)}, the unit being ${units[info.source]}`;

  const slider = card.querySelector('.slider');
  const output = card.querySelector('.slider-value');
  const max = state.info.slider_max;
  slider.min = String(-max);
  slider.max = String(max);
  const value = state.sliders.get(info.latent) || 0;
  slider.value = String(value);
  output.textContent = String(value);
  slider.setAttribute('aria-label', `slider of latent ${info.latent}`);
  slider.addEventListener('input', () => {
    const v = Number(slider.value);
    output.textContent = String(v);
    state.sliders.set(info.latent, v);
    scheduleSteer();
  });
  card.querySelector('.zero').addEventListener('click', () => {
    slider.value = '0';
    output.textContent = '0';
    state.sliders.set(info.latent, 0);
    scheduleSteer();
  });

  state.imagePatches.set(info.latent, info.image_patches);
  card.addEventListener('mouseenter', () => showHeat(info.image_patches));
  card.addEventListener('mouseleave', () => showHeat(null));

  const exemplars = card.querySelector('.exemplars');
  for (const ex of info.exemplars) exemplars.append(makeExemplar(ex));
  if (!info.exemplars.length) {
    const p = document.createElement('span');
    p.className = 'muted';
    p.textContent = state.info.stats ? 'no exemplars' : 'no statistics, no exemplars';
    exemplars.append(p);
  }
  state.cards.set(info.latent, card);
  return card;
}

function makeExemplar(ex) {
  const box = document.createElement('div');
  box.className = 'exemplar';
  box.title = `reference image ${ex.image}, max ${fmt(ex.value)}`;
  if (state.exemplarImages) {
    const img = document.createElement('img');
    img.alt = `reference image ${ex.image}`;
    img.src = `/api/reference/${ex.image}`;
    img.loading = 'lazy';
    box.append(img);
  }
  const side = Math.round(Math.sqrt(ex.patches.length));
  const canvas = document.createElement('canvas');
  canvas.width = side;
  canvas.height = side;
  const ctx = canvas.getContext('2d');
  const max = Math.max(...ex.patches, 1e-12);
  for (let p = 0; p < ex.patches.length; p += 1) {
    const v = Math.max(ex.patches[p], 0) / max;
    if (v <= 0) continue;
    ctx.fillStyle = `rgba(255, 40, 0, ${(0.2 + 0.6 * v).toFixed(3)})`;
    ctx.fillRect(p % side, Math.floor(p / side), 1, 1);
  }
  if (!state.exemplarImages) canvas.classList.add('alone');
  const caption = document.createElement('span');
  caption.className = 'exemplar-caption';
  caption.textContent = `#${ex.image}`;
  box.append(canvas, caption);
  return box;
}

function addLatentCard(latent) {
  if (!Number.isInteger(latent) || latent < 0 || latent >= state.info.d_sae) {
    setStatus(`There is no latent ${latent}: the SAE has latents 0 to ${state.info.d_sae - 1}.`, 'error');
    return Promise.resolve();
  }
  state.pinned.add(latent);
  return refreshLatents();
}

// ---------- steering ----------

function scheduleSteer() {
  if (state.steerBusy) {
    state.steerPending = true;
    return;
  }
  steer();
}

// One request in flight at a time; slider moves during it are folded into
// the next request, so the last position always wins.
async function steer() {
  if (!state.id) return;
  state.steerBusy = true;
  const id = state.id;
  const edits = {};
  for (const [latent, value] of state.sliders) if (value !== 0) edits[latent] = value;
  try {
    await busy('Steering…', async () => {
      const r = await postJson(`/api/images/${id}/steer`, { edits });
      if (id !== state.id) return;
      $('edited').src = r.image;
      renderLegend($('legend-edited'), r.legend);
      const n = r.patches.length;
      $('changed').textContent = Object.keys(edits).length ? `(${r.changed} of ${n} patches changed)` : '';
      $('edited').dataset.changed = String(r.changed);
    });
  } finally {
    state.steerBusy = false;
    if (state.steerPending) {
      state.steerPending = false;
      steer();
    }
  }
}

function resetSliders() {
  for (const latent of state.sliders.keys()) state.sliders.set(latent, 0);
  for (const card of state.cards.values()) {
    card.querySelector('.slider').value = '0';
    card.querySelector('.slider-value').textContent = '0';
  }
  scheduleSteer();
}

// ---------- guided examples ----------

async function runGuided(g) {
  const info = state.info;
  if (g.index >= info.examples) {
    setStatus(
      `The "${g.name}" example needs ADE20K validation image ${g.index}; this dataset has only ${info.examples} examples.`,
      'error',
    );
    return;
  }
  if (!(await loadExample(g.index))) return;
  if (g.latent >= info.d_sae) {
    setStatus(
      `Loaded example ${g.index}, but the "${g.name}" example steers latent ${g.latent} of the published SAE; this SAE has ${info.d_sae} latents.`,
      'error',
    );
    return;
  }
  state.sliders.set(g.latent, g.slider);
  state.pinned.add(g.latent);
  await refreshLatents();
  const card = state.cards.get(g.latent);
  if (card) {
    card.querySelector('.slider').value = String(g.slider);
    card.querySelector('.slider-value').textContent = String(g.slider);
    card.scrollIntoView({ block: 'nearest' });
  }
  scheduleSteer();
}

// ---------- start ----------

function bind() {
  const current = () => Number.parseInt($('index').value, 10);
  $('go').addEventListener('click', () => loadExample(current()));
  $('index').addEventListener('keydown', (e) => {
    if (e.key === 'Enter') loadExample(current());
  });
  $('prev').addEventListener('click', () => loadExample(Math.max((state.index ?? 1) - 1, 0)));
  $('next').addEventListener('click', () =>
    loadExample(Math.min((state.index ?? -1) + 1, state.info.examples - 1)),
  );
  $('random').addEventListener('click', () =>
    loadExample(Math.floor(Math.random() * state.info.examples)),
  );
  $('upload').addEventListener('change', (e) => {
    const file = e.target.files && e.target.files[0];
    if (file) uploadFile(file);
    e.target.value = '';
  });
  $('clear').addEventListener('click', clearSelection);
  $('reset').addEventListener('click', resetSliders);
  $('add').addEventListener('click', () => addLatentCard(Number.parseInt($('add-latent').value, 10)));
}

function showInfo(info) {
  $('index').max = String(info.examples - 1);
  $('count').textContent = `${info.examples} examples (${info.dataset}); SAE at layer ${info.layer}, ${info.d_sae} latents`;
  $('add-latent').max = String(info.d_sae - 1);
  const notes = $('notes');
  notes.replaceChildren();
  const lines = [...(info.notes || [])];
  if (!info.stats) {
    lines.push(
      "No feature statistics: frequent latents are not hidden, there are no exemplars, and a slider's unit is the latent's largest value on the current image.",
    );
  } else if (!info.exemplar_images) {
    lines.push(`Exemplars come from ${info.stats.reference}, which this server does not have: heat maps only.`);
  }
  for (const line of lines) {
    const li = document.createElement('li');
    li.textContent = line;
    notes.append(li);
  }
  const guided = $('guided');
  guided.replaceChildren();
  for (const g of info.guided) {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'small';
    b.textContent = `${g.name}: #${g.index}, latent ${g.latent} at ${g.slider}`;
    b.addEventListener('click', () => runGuided(g));
    guided.append(b);
  }
}

async function start() {
  bind();
  buildGrid();
  try {
    state.info = await api('/api/info');
  } catch (err) {
    setStatus(`Error: cannot reach the server: ${err.message}`, 'error');
    return;
  }
  showInfo(state.info);
  if (state.info.examples > 0) await loadExample(0);
  else setStatus('No examples; upload an image.', 'ready');
}

start();
