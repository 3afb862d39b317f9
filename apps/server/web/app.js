// The blip2cpp web page: pick an image, read its caption, ask questions (the
// answer streams in over the OpenAI-compatible chat endpoint), score typed
// texts against the image, and search an indexed collection. Plain browser
// JavaScript, no framework, no build step; every request goes to the server
// that served this page (see docs/api.md).
'use strict';

const $ = (id) => document.getElementById(id);

const state = {
  image: null,          // the picked image as a data: URI
  imageSerial: 0,       // bumps on every new image, so stale answers are dropped
  capabilities: { generate: false, retrieval: false, search: false },
  model: 'blip2',       // the served model's id, from /health
  chatAbort: null,      // AbortController of the answer streaming now
};

// ---------- talking to the server ----------

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

// The server's own words, put into a sentence a user can act on.
function plainWords(status, serverMessage) {
  const said = serverMessage ? ` (The server said: ${serverMessage})` : '';
  switch (status) {
    case 400: return `The server could not use this request.${said}`;
    case 401: return 'This server needs an API key. Enter it under Settings and try again.';
    case 404: return `The server does not offer this here.${said}`;
    case 405: return `The server does not allow this request.${said}`;
    case 413: return `The image is too large for this server. Try a smaller image.${said}`;
    case 415: return `The server did not accept this kind of upload.${said}`;
    case 429: return 'The server is busy right now (its queue is full). Wait a moment and try again.';
    case 500: return `Something went wrong inside the server.${said}`;
    case 503: return `The server is shutting down or not ready.${said}`;
    case 504: return 'The model took too long and the server gave up. Try again, or ask for a shorter answer.';
    default: return `The server answered with status ${status}.${said}`;
  }
}

function headers(json) {
  const h = {};
  if (json) h['Content-Type'] = 'application/json';
  const key = $('api-key').value.trim();
  if (key) h['Authorization'] = `Bearer ${key}`;
  return h;
}

// fetch() that turns a network failure or an error status into an ApiError
// with a plain message; returns the Response when it is OK.
async function request(path, { method = 'GET', body, signal } = {}) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: headers(body !== undefined),
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(`Could not reach the server at ${location.origin}. Is blip2 serve still running?`, 0);
  }
  if (!response.ok) {
    let message = '';
    try {
      const payload = await response.json();
      message = payload && payload.error && payload.error.message ? payload.error.message : '';
    } catch (_) { /* not JSON: keep the status alone */ }
    throw new ApiError(plainWords(response.status, message), response.status);
  }
  return response;
}

async function requestJson(path, options) {
  const response = await request(path, options);
  try {
    return await response.json();
  } catch (_) {
    throw new ApiError('The server sent an answer this page could not read.', response.status);
  }
}

// Reads an OpenAI-style server-sent event stream, calling onText with each
// piece of the answer; resolves with the finish reason.
async function readChatStream(response, onText) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let finish = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, '');
      const data = event.split(/\r?\n/)
        .filter((line) => line.startsWith('data:'))
        .map((line) => line.slice(5).replace(/^ /, ''))
        .join('\n');
      if (!data) continue;
      if (data === '[DONE]') return finish;
      let chunk;
      try {
        chunk = JSON.parse(data);
      } catch (_) {
        throw new ApiError('The server sent a streamed answer this page could not read.', 200);
      }
      if (chunk.error) throw new ApiError(plainWords(500, chunk.error.message), 500);
      const choice = chunk.choices && chunk.choices[0];
      if (!choice) continue;
      if (choice.delta && choice.delta.content) onText(choice.delta.content);
      if (choice.finish_reason) finish = choice.finish_reason;
    }
  }
  throw new ApiError('The answer stopped before it was complete (the connection closed).', 0);
}

// ---------- messages ----------

function showError(err) {
  if (err && err.name === 'AbortError') return;
  const message = err instanceof ApiError ? err.message : `Something went wrong in this page: ${err && err.message}`;
  $('error-text').textContent = message;
  $('error').hidden = false;
  if (err instanceof ApiError && err.status === 401) {
    document.querySelector('details.settings').open = true;
  }
}

function clearError() {
  $('error').hidden = true;
  $('error-text').textContent = '';
}

function maxTokens() {
  const n = parseInt($('max-tokens').value, 10);
  return Number.isFinite(n) && n > 0 ? n : undefined;
}

// ---------- health and capabilities ----------

async function loadHealth() {
  try {
    const health = await requestJson('/health');
    state.capabilities = Object.assign(state.capabilities, health.capabilities || {});
    if (health.model) state.model = health.model;
    const parts = [`Model: ${health.model || 'unknown'}`];
    const caps = state.capabilities;
    parts.push(caps.generate ? 'captions and questions' : 'no generation model');
    if (caps.retrieval) parts.push('matching');
    if (caps.search) parts.push('search');
    $('server-status').textContent = `${parts.join(' · ')} — ready`;
    $('server-status').dataset.state = 'ready';
    $('match-panel').hidden = !caps.retrieval;
    $('search-panel').hidden = !caps.search;
    updateControls();
  } catch (err) {
    $('server-status').textContent = 'The server is not answering.';
    $('server-status').dataset.state = 'error';
    showError(err);
  }
}

function updateControls() {
  const haveImage = state.image !== null;
  const caps = state.capabilities;
  $('question').disabled = !(haveImage && caps.generate);
  $('ask').disabled = !(haveImage && caps.generate);
  $('match').disabled = !(haveImage && caps.retrieval);
  $('search-by-image').disabled = !(haveImage && caps.search);
}

// ---------- the image ----------

function readAsDataUri(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`could not read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

async function useFile(file) {
  if (!file) return;
  clearError();
  // The server reads PNG, JPEG and WebP; an unknown type is left for it to judge.
  if (file.type && !['image/png', 'image/jpeg', 'image/webp'].includes(file.type)) {
    const what = file.type.startsWith('image/') ? `a ${file.type.slice(6).toUpperCase()} image` : 'not an image';
    showError(new ApiError(`"${file.name}" is ${what}; the server reads PNG, JPEG and WebP images.`, 0));
    return;
  }
  let uri;
  try {
    uri = await readAsDataUri(file);
  } catch (err) {
    showError(new ApiError(`This page could not read "${file.name}".`, 0));
    return;
  }
  state.image = uri;
  state.imageSerial += 1;
  if (state.chatAbort) state.chatAbort.abort();
  $('preview').src = uri;
  $('preview').alt = `The picked image, ${file.name}`;
  $('preview').hidden = false;
  $('drop-zone').classList.add('has-image');
  $('drop-hint').textContent = 'Drop another image, or choose a file';
  $('image-name').textContent = `${file.name} · ${(file.size / 1024).toFixed(1)} KiB`;
  $('chat').replaceChildren();
  $('match-results').replaceChildren();
  updateControls();
  caption();
  if (state.capabilities.retrieval && matchTexts().length > 0) match();
}

async function caption() {
  const el = $('caption');
  const timing = $('caption-timing');
  timing.textContent = '';
  if (!state.capabilities.generate) {
    el.textContent = 'This server has no generation model, so it cannot write captions.';
    el.dataset.state = 'empty';
    return;
  }
  const serial = state.imageSerial;
  el.textContent = 'Writing a caption…';
  el.className = 'caption muted';
  el.dataset.state = 'loading';
  try {
    const result = await requestJson('/v1/caption', {
      method: 'POST',
      body: { image: state.image, max_tokens: maxTokens() },
    });
    if (serial !== state.imageSerial) return;
    el.textContent = result.text && result.text.trim() ? result.text.trim() : '(the model wrote an empty caption)';
    el.className = 'caption';
    el.dataset.state = 'done';
    const t = result.timings || {};
    if (t.total_ms !== undefined) {
      timing.textContent = `${Math.round(t.total_ms)} ms (waited ${Math.round(t.queue_ms || 0)} ms in the queue)`;
    }
  } catch (err) {
    if (serial !== state.imageSerial) return;
    el.textContent = 'No caption.';
    el.dataset.state = 'error';
    showError(err);
  }
}

// ---------- questions ----------

function addTurn(question) {
  const li = document.createElement('li');
  li.className = 'turn';
  const q = document.createElement('p');
  q.className = 'question';
  q.textContent = question;
  const a = document.createElement('p');
  a.className = 'answer';
  a.dataset.state = 'streaming';
  a.dataset.chunks = '0';
  a.setAttribute('aria-busy', 'true');
  li.append(q, a);
  $('chat').append(li);
  li.scrollIntoView({ block: 'nearest' });
  return a;
}

async function ask(question) {
  clearError();
  const answer = addTurn(question);
  const serial = state.imageSerial;
  const controller = new AbortController();
  state.chatAbort = controller;
  $('ask').disabled = true;
  try {
    const response = await request('/v1/chat/completions', {
      method: 'POST',
      signal: controller.signal,
      body: {
        model: state.model,
        stream: true,
        max_tokens: maxTokens(),
        // Greedy decoding streams token by token; beam search only knows its text at the end.
        ...($('beams').checked ? { num_beams: 5 } : { temperature: 0 }),
        messages: [{
          role: 'user',
          content: [
            { type: 'image_url', image_url: { url: state.image } },
            { type: 'text', text: question },
          ],
        }],
      },
    });
    let chunks = 0;
    const finish = await readChatStream(response, (text) => {
      chunks += 1;
      answer.textContent += text;
      answer.dataset.chunks = String(chunks);
    });
    answer.textContent = answer.textContent.trim() || '(no answer)';
    if (finish === 'length') answer.title = 'The answer reached the longest length set under Settings.';
    answer.dataset.state = 'done';
  } catch (err) {
    if (err.name === 'AbortError' || serial !== state.imageSerial) {
      answer.dataset.state = 'cancelled';
      if (!answer.textContent) answer.textContent = '(stopped: a new image was picked)';
    } else {
      answer.dataset.state = 'error';
      if (!answer.textContent) answer.textContent = '(no answer)';
      showError(err);
    }
  } finally {
    answer.removeAttribute('aria-busy');
    if (state.chatAbort === controller) state.chatAbort = null;
    updateControls();
  }
}

// ---------- match scores ----------

function matchTexts() {
  return $('match-texts').value.split('\n').map((t) => t.trim()).filter((t) => t.length > 0);
}

function scoreBar(label, fraction, shown) {
  const row = document.createElement('div');
  row.className = 'bar-row';
  const name = document.createElement('span');
  name.className = 'bar-label';
  name.textContent = label;
  const track = document.createElement('div');
  track.className = 'bar';
  track.setAttribute('role', 'meter');
  track.setAttribute('aria-label', `${label}: ${shown}`);
  track.setAttribute('aria-valuemin', '0');
  track.setAttribute('aria-valuemax', '100');
  track.setAttribute('aria-valuenow', String(Math.round(fraction * 100)));
  const fill = document.createElement('div');
  fill.className = 'bar-fill';
  fill.style.width = `${Math.max(0, Math.min(1, fraction)) * 100}%`;
  track.append(fill);
  const value = document.createElement('span');
  value.className = 'bar-value';
  value.textContent = shown;
  row.append(name, track, value);
  return row;
}

async function match() {
  const texts = matchTexts();
  const list = $('match-results');
  if (texts.length === 0) {
    showError(new ApiError('Type at least one text to score, one per line.', 0));
    return;
  }
  clearError();
  const serial = state.imageSerial;
  list.dataset.state = 'loading';
  list.setAttribute('aria-busy', 'true');
  try {
    const result = await requestJson('/v1/match', { method: 'POST', body: { image: state.image, texts } });
    if (serial !== state.imageSerial) return;
    const rows = (result.results || []).map((r) => {
      const li = document.createElement('li');
      li.className = 'score';
      const text = document.createElement('p');
      text.className = 'score-text';
      text.textContent = r.text;
      const p = Number(r.itm_probability);
      const c = Number(r.itc_cosine);
      li.append(text,
        scoreBar('Match', p, `${(p * 100).toFixed(1)}%`),
        scoreBar('Similarity', (c + 1) / 2, c.toFixed(3)));
      return li;
    });
    list.replaceChildren(...rows);
    list.dataset.state = 'done';
  } catch (err) {
    list.dataset.state = 'error';
    showError(err);
  } finally {
    list.removeAttribute('aria-busy');
  }
}

// ---------- search ----------

async function search(query) {
  const list = $('search-results');
  clearError();
  const k = parseInt($('search-k').value, 10);
  const body = Object.assign({ k: Number.isFinite(k) && k > 0 ? k : 5 }, query);
  list.dataset.state = 'loading';
  try {
    const result = await requestJson('/v1/search', { method: 'POST', body });
    const rows = (result.results || []).map((r) => {
      const li = document.createElement('li');
      const path = document.createElement('span');
      path.className = 'path';
      path.textContent = r.path;
      const scores = document.createElement('span');
      scores.className = 'muted small';
      const bits = [`score ${Number(r.score).toFixed(3)}`];
      if (r.itm_probability !== undefined && r.itm_probability !== null) {
        bits.push(`match ${(Number(r.itm_probability) * 100).toFixed(1)}%`);
      }
      if (r.itc_cosine !== undefined && r.itc_cosine !== null) {
        bits.push(`similarity ${Number(r.itc_cosine).toFixed(3)}`);
      }
      scores.textContent = bits.join(' · ');
      li.append(path, scores);
      return li;
    });
    if (rows.length === 0) {
      const li = document.createElement('li');
      li.className = 'muted';
      li.textContent = 'Nothing found.';
      rows.push(li);
    }
    list.replaceChildren(...rows);
    list.dataset.state = 'done';
  } catch (err) {
    list.dataset.state = 'error';
    showError(err);
  }
}

// ---------- wiring ----------

function wire() {
  const zone = $('drop-zone');
  $('image-input').addEventListener('change', (e) => {
    useFile(e.target.files[0]);
    e.target.value = '';  // so that picking the same file again is a new pick
  });
  zone.addEventListener('dragover', (e) => {
    e.preventDefault();
    zone.classList.add('dragging');
  });
  zone.addEventListener('dragleave', () => zone.classList.remove('dragging'));
  zone.addEventListener('drop', (e) => {
    e.preventDefault();
    zone.classList.remove('dragging');
    if (e.dataTransfer && e.dataTransfer.files.length > 0) useFile(e.dataTransfer.files[0]);
  });
  document.addEventListener('paste', (e) => {
    const item = [...(e.clipboardData ? e.clipboardData.items : [])].find((i) => i.type.startsWith('image/'));
    if (item) useFile(item.getAsFile());
  });
  $('ask-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const question = $('question').value.trim();
    if (!question || !state.image) return;
    $('question').value = '';
    ask(question);
  });
  $('match-form').addEventListener('submit', (e) => {
    e.preventDefault();
    if (state.image) match();
  });
  $('search-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const text = $('search-text').value.trim();
    if (text) search({ text });
  });
  $('search-by-image').addEventListener('click', () => {
    if (state.image) search({ image: state.image });
  });
  $('error-close').addEventListener('click', clearError);
  const saved = sessionStorage.getItem('blip2-api-key');
  if (saved) $('api-key').value = saved;
  $('api-key').addEventListener('change', async () => {
    sessionStorage.setItem('blip2-api-key', $('api-key').value.trim());
    clearError();
    await loadHealth();
    // A caption refused for want of the key is asked for again.
    if (state.image && $('caption').dataset.state === 'error') caption();
  });
}

wire();
loadHealth();
