// lockstep dashboard: no framework, no build step. Data comes from one server-sent-events stream read
// with fetch (EventSource cannot send an Authorization header); the token lives in sessionStorage.
'use strict';

const TOKEN_KEY = 'lockstep.token';
const FILTERS = ['namespace', 'environment', 'commit', 'author', 'state'];
const live = { gates: new Map(), traces: new Map() };
let staging = null;          // maps filled by a snapshot until SYNCED, so a reconnect does not flicker
let changed = new Set();     // keys changed since the last render, flashed once
const expanded = new Set();  // traces whose history is open
let stream = null;           // AbortController of the current stream
let retryTimer = null;
let renderQueued = false;

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else node.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === '') continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// Only http(s) links: the URLs come from Azure DevOps and the cluster, never trusted as script.
function safeUrl(u) {
  if (!u) return null;
  try {
    const url = new URL(u, location.href);
    return url.protocol === 'https:' || url.protocol === 'http:' ? url.href : null;
  } catch (_) { return null; }
}

function link(text, url) {
  const href = safeUrl(url);
  return href ? el('a', { href, target: '_blank', rel: 'noopener noreferrer' }, text) : document.createTextNode(text);
}

const short = (sha) => (sha || '').slice(0, 7);

function stateClass(s) {
  switch (s) {
    case 'Succeeded': case 'Arrived': case 'Open': case 'succeeded': return 'ok';
    case 'InProgress': case 'Progressing': case 'Waiting': case 'Pending': case 'inProgress': case 'notStarted': return 'wait';
    case 'Failed': case 'Stalled': case 'Closed': case 'failed': case 'canceled': return 'bad';
    default: return '';
  }
}

function chip(s) { return el('span', { class: 'state ' + stateClass(s) }, s || 'Unknown'); }

function ago(t) {
  if (!t) return '';
  const s = Math.round((Date.now() - Date.parse(t)) / 1000);
  if (!Number.isFinite(s)) return '';
  if (s < 60) return s + 's ago';
  if (s < 3600) return Math.round(s / 60) + 'm ago';
  if (s < 86400) return Math.round(s / 3600) + 'h ago';
  return Math.round(s / 86400) + 'd ago';
}

function duration(from, to) {
  const ms = Date.parse(to) - Date.parse(from);
  if (!Number.isFinite(ms) || ms < 0) return '';
  const s = Math.round(ms / 1000);
  return s < 60 ? s + 's' : s < 3600 ? Math.floor(s / 60) + 'm' + (s % 60 ? (s % 60) + 's' : '') : Math.floor(s / 3600) + 'h' + Math.round((s % 3600) / 60) + 'm';
}

const keyOf = (o) => (o.metadata.namespace || '') + '/' + o.metadata.name;

// ---- the stream ------------------------------------------------------------------------------

function setConnection(text) { $('#connection').textContent = text; }

function showSignin(message) {
  if (stream) stream.abort();
  $('#board').hidden = true;
  $('#signout').hidden = true;
  $('#signin').hidden = false;
  $('#signin-error').textContent = message || '';
  setConnection('Not connected');
  $('#token').focus();
}

function retryLater() {
  clearTimeout(retryTimer);
  retryTimer = setTimeout(connect, 2000);
}

async function connect() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) { showSignin(); return; }
  if (stream) stream.abort();
  const mine = new AbortController();
  stream = mine;
  setConnection('Connecting…');
  let res;
  try {
    res = await fetch('api/v1/watch', {
      headers: { Authorization: 'Bearer ' + token, Accept: 'text/event-stream' },
      cache: 'no-store', signal: mine.signal,
    });
  } catch (e) {
    if (!mine.signal.aborted) { setConnection('Disconnected; retrying…'); retryLater(); }
    return;
  }
  if (res.status === 401) { sessionStorage.removeItem(TOKEN_KEY); showSignin('The token was not accepted.'); return; }
  if (res.status === 403) { showSignin('This token may not watch PipelineGates or ServiceTraces.'); return; }
  if (!res.ok || !res.body) { setConnection('Server answered ' + res.status + '; retrying…'); retryLater(); return; }
  $('#signin').hidden = true;
  $('#board').hidden = false;
  $('#signout').hidden = false;
  staging = { gates: new Map(), traces: new Map() };
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let end;
      while ((end = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const data = block.split('\n').filter((l) => l.startsWith('data:'))
          .map((l) => l.slice(5).replace(/^ /, '')).join('\n');
        if (data) handle(JSON.parse(data));
      }
    }
  } catch (e) {
    if (mine.signal.aborted) return;
  }
  if (stream === mine) { setConnection('Disconnected; reconnecting…'); retryLater(); }
}

function handle(ev) {
  const target = staging || live;
  const map = ev.kind === 'PipelineGate' ? target.gates : target.traces;
  switch (ev.type) {
    case 'ADDED': case 'MODIFIED':
      map.set(keyOf(ev.object), ev.object);
      if (!staging) changed.add(ev.kind + ':' + keyOf(ev.object));
      break;
    case 'DELETED':
      map.delete(keyOf(ev.object));
      break;
    case 'SYNCED':
      live.gates = staging.gates;
      live.traces = staging.traces;
      staging = null;
      setConnection('Live');
      break;
    default: // ERROR, RECONNECT: the server ends the stream next; connect() reconnects.
      setConnection(ev.message || 'Reconnecting…');
      return;
  }
  if (!staging) queueRender();
}

// ---- filters -----------------------------------------------------------------------------------

function filters() {
  const form = $('#filters');
  const f = {};
  for (const name of FILTERS) f[name] = form.elements[name].value.trim();
  f.commit = f.commit.toLowerCase();
  f.author = f.author.toLowerCase();
  return f;
}

function latestOf(t) { return (t.status && t.status.latest) || null; }
function historyOf(t) { return (t.status && t.status.history) || []; }

// The same facts the API's trace filters read (src/api/query.rs).
function traceFacts(t) {
  const s = t.status || {};
  const commits = [s.manifestCommitId, s.deployedRevision];
  const tags = [s.imageTag];
  const authors = [];
  const envs = ((t.spec && t.spec.environments) || []).map((e) => e.name);
  for (const st of s.stages || []) commits.push(st.commit, st.run && st.run.sourceVersion);
  const l = latestOf(t);
  if (l) {
    commits.push(l.build && l.build.commit, l.hldUpdate && l.hldUpdate.commit, l.manifestGeneration && l.manifestGeneration.commit);
    authors.push(l.build && l.build.author);
    for (const e of l.environments || []) envs.push(e.name);
  }
  for (const h of historyOf(t)) {
    commits.push(h.commit, h.hldCommit, h.manifestCommit);
    authors.push(h.author);
    envs.push(...Object.keys(h.environments || {}));
  }
  return { commits: commits.filter(Boolean), tags: tags.filter(Boolean), authors: authors.filter(Boolean), envs };
}

function traceMatches(t, f) {
  if (f.namespace && t.metadata.namespace !== f.namespace) return false;
  if (f.state && t.state !== f.state) return false;
  if (!f.commit && !f.author && !f.environment) return true;
  const facts = traceFacts(t);
  if (f.commit && !facts.commits.some((c) => c.toLowerCase().startsWith(f.commit))) return false;
  if (f.author && !facts.authors.some((a) => a.toLowerCase().includes(f.author))) return false;
  if (f.environment && !facts.envs.includes(f.environment)) return false;
  return true;
}

function gateMatches(g, f) {
  if (f.namespace && g.metadata.namespace !== f.namespace) return false;
  if (f.state && g.state !== f.state) return false;
  if (f.commit) {
    const run = g.verdict && g.verdict.run;
    const sha = ((run && run.sourceVersion) || '').toLowerCase();
    if (!sha.startsWith(f.commit)) return false;
  }
  return true;
}

function fillSelect(select, values) {
  const current = select.value;
  const want = ['', ...values];
  const have = Array.from(select.options).map((o) => o.value);
  if (want.join('\n') === have.join('\n')) return;
  select.replaceChildren(...want.map((v) => el('option', { value: v }, v || 'all')));
  select.value = want.includes(current) ? current : '';
}

// ---- rendering -----------------------------------------------------------------------------------

function queueRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => { renderQueued = false; render(); });
}

function environmentColumns(traces) {
  const names = [];
  for (const t of traces) {
    for (const e of (latestOf(t) || {}).environments || []) if (!names.includes(e.name)) names.push(e.name);
  }
  return names;
}

function stageColumns(traces) {
  const names = [];
  for (const t of traces) {
    if (latestOf(t)) continue;
    for (const s of (t.status && t.status.stages) || []) if (!names.includes(s.name)) names.push(s.name);
  }
  return names;
}

function traceRow(t, envCols, stageCols) {
  const key = keyOf(t);
  const l = latestOf(t);
  const b = (l && l.build) || {};
  const stages = (t.status && t.status.stages) || [];
  const buildStage = stages.find((s) => s.name === 'build') || {};
  const run = buildStage.run || {};
  const history = historyOf(t);
  const histId = 'history-' + key.replace(/[^A-Za-z0-9_-]/g, '_');
  const open = expanded.has(key);
  const toggle = el('button', { type: 'button', 'aria-expanded': String(open), 'aria-controls': histId, 'data-focus': 'toggle:' + key,
    'aria-label': 'Stages and history of ' + t.metadata.name + ' (' + history.length + ' builds)' }, open ? '▾ History' : '▸ History');
  const tag = b.imageTag || b.number || (t.status && t.status.imageTag) || run.buildNumber || '—';
  const commit = b.commit || run.sourceVersion || buildStage.commit;
  const started = b.startTime || run.startTime;
  const finished = b.finishTime || run.finishTime;
  const pr = b.pullRequest;
  const cells = [
    el('th', { scope: 'row' }, t.metadata.name, el('small', {}, t.metadata.namespace), toggle),
    el('td', {}, link(tag, b.url || run.webUrl), el('small', {}, finished ? 'built in ' + duration(started, finished) + ', ' + ago(finished) : (b.result || run.status || ''))),
    el('td', {}, commit ? link(short(commit), b.commitUrl) : '—', el('small', {}, b.author || '')),
    el('td', {}, pr ? link('!' + pr.id + (pr.title ? ' ' + pr.title : ''), pr.url) : '—'),
    el('td', {}, chip(t.state), el('small', {}, (t.status && t.status.summary) || '')),
  ];
  for (const name of envCols) {
    const e = ((l && l.environments) || []).find((x) => x.name === name);
    cells.push(el('td', {}, e ? [chip(e.state), el('small', {}, e.leadTime ? 'lead time ' + e.leadTime : (e.arrivedAt ? ago(e.arrivedAt) : (e.message || '')))] : '—'));
  }
  for (const name of stageCols) {
    const s = stages.find((x) => x.name === name);
    cells.push(el('td', {}, s ? [chip(s.state), el('small', {}, s.run ? link(s.run.buildNumber || String(s.run.id), s.run.webUrl) : short(s.commit))] : '—'));
  }
  const rows = [el('tr', { 'data-key': key, 'data-state': t.state, class: changed.has('ServiceTrace:' + key) ? 'changed' : null }, cells)];
  rows.push(historyRow(t, histId, envCols, cells.length, open));
  return rows;
}

function historyRow(t, id, envCols, span, open) {
  const envs = [...envCols];
  for (const h of historyOf(t)) for (const n of Object.keys(h.environments || {})) if (!envs.includes(n)) envs.push(n);
  const head = el('tr', {}, ['Image tag', 'Commit', 'Author', 'Pull request', 'Built', 'HLD', 'Manifest', ...envs]
    .map((h) => el('th', { scope: 'col' }, h)));
  const body = historyOf(t).map((h) => el('tr', { 'data-build': String(h.buildId) },
    el('th', { scope: 'row' }, link(h.imageTag || String(h.buildId), h.buildUrl)),
    el('td', { class: 'sha' }, short(h.commit) || '—'),
    el('td', {}, h.author || '—'),
    el('td', {}, h.pullRequest ? link('!' + h.pullRequest.id, h.pullRequest.url) : '—'),
    el('td', {}, ago(h.buildFinishTime) || '—'),
    el('td', {}, h.hldRun ? link(h.hldRun.number || String(h.hldRun.id), h.hldRun.url) : (short(h.hldCommit) || '—')),
    el('td', {}, h.manifestRun ? link(h.manifestRun.number || String(h.manifestRun.id), h.manifestRun.url) : (short(h.manifestCommit) || '—')),
    envs.map((n) => {
      const a = (h.environments || {})[n];
      return el('td', {}, a ? [chip(a.state), el('small', {}, a.leadTime ? 'lead time ' + a.leadTime : ago(a.arrivedAt))] : '—');
    })));
  const name = t.metadata.namespace + '/' + t.metadata.name;
  const stages = (t.status && t.status.stages) || [];
  const stageTable = el('table', { class: 'stages' }, el('caption', {}, 'Stages of the newest build of ' + name),
    el('thead', {}, el('tr', {}, ['Stage', 'State', 'Run', 'Commit', 'Updated', 'Message'].map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, stages.map((st) => el('tr', { 'data-stage': st.name },
      el('th', { scope: 'row' }, st.name),
      el('td', {}, chip(st.state)),
      el('td', {}, st.run ? link(st.run.buildNumber || String(st.run.id), st.run.webUrl) : '—'),
      el('td', { class: 'sha' }, st.commit ? link(short(st.commit), st.webUrl) : '—'),
      el('td', {}, ago(st.updatedTime) || '—'),
      el('td', {}, st.message || '')))));
  const historyTable = body.length
    ? el('table', {}, el('caption', {}, 'Build history of ' + name), el('thead', {}, head), el('tbody', {}, body))
    : el('p', {}, 'No build history recorded for ' + name + ' yet.');
  return el('tr', { id, class: 'history', hidden: !open }, el('td', { colspan: String(span) }, stageTable, historyTable));
}

function gateRow(g) {
  const key = keyOf(g);
  const v = g.verdict || {};
  const run = v.run || {};
  return el('tr', { 'data-key': key, 'data-state': g.state, class: changed.has('PipelineGate:' + key) ? 'changed' : null },
    el('th', { scope: 'row' }, g.metadata.name, el('small', {}, g.metadata.namespace)),
    el('td', {}, chip(v.open ? 'Open' : 'Closed')),
    el('td', {}, v.reason || ''),
    el('td', {}, run.id ? link(run.buildNumber || String(run.id), run.webUrl) : '—', el('small', {}, run.pipeline || '')),
    el('td', { class: 'sha' }, short(run.sourceVersion) || '—'),
    el('td', {}, ago(v.checkedAt) || '—'),
    el('td', {}, v.message || ''));
}

function render() {
  const focusKey = document.activeElement && document.activeElement.getAttribute('data-focus');
  const f = filters();
  const allTraces = [...live.traces.values()];
  const allGates = [...live.gates.values()];
  const namespaces = [...new Set([...allTraces, ...allGates].map((o) => o.metadata.namespace))].sort();
  fillSelect($('#filters').elements.namespace, namespaces);
  const envNames = new Set();
  for (const t of allTraces) for (const e of traceFacts(t).envs) envNames.add(e);
  fillSelect($('#filters').elements.environment, [...envNames].sort());

  const byKey = (a, b) => keyOf(a).localeCompare(keyOf(b));
  const traces = allTraces.filter((t) => traceMatches(t, f)).sort(byKey);
  const envCols = environmentColumns(traces);
  const stageCols = stageColumns(traces);
  const head = el('tr', {}, ['Service', 'Build', 'Commit', 'Pull request', 'State', ...envCols, ...stageCols]
    .map((h) => el('th', { scope: 'col' }, h)));
  $('#traces thead').replaceChildren(head);
  $('#traces tbody').replaceChildren(...traces.flatMap((t) => traceRow(t, envCols, stageCols)));
  $('#traces-count').textContent = traces.length + ' of ' + allTraces.length + ' shown.';
  $('#traces-empty').hidden = traces.length > 0;

  const gates = allGates.filter((g) => gateMatches(g, f)).sort(byKey);
  $('#gates tbody').replaceChildren(...gates.map(gateRow));
  $('#gates-count').textContent = gates.length + ' of ' + allGates.length + ' shown.';
  $('#gates-empty').hidden = gates.length > 0;

  changed = new Set();
  if (focusKey) {
    const again = document.querySelector('[data-focus="' + CSS.escape(focusKey) + '"]');
    if (again) again.focus();
  }
}

// ---- wiring ------------------------------------------------------------------------------------

function syncUrl() {
  const params = new URLSearchParams();
  const form = $('#filters');
  for (const name of FILTERS) if (form.elements[name].value) params.set(name, form.elements[name].value);
  const query = params.toString();
  history.replaceState(null, '', query ? '?' + query : location.pathname);
}

document.addEventListener('DOMContentLoaded', () => {
  const form = $('#filters');
  const initial = new URLSearchParams(location.search);
  for (const name of FILTERS) {
    const v = initial.get(name);
    if (!v) continue;
    const field = form.elements[name];
    if (field.tagName === 'SELECT' && !Array.from(field.options).some((o) => o.value === v)) field.append(el('option', { value: v }, v));
    field.value = v;
  }
  form.addEventListener('input', () => { syncUrl(); render(); });
  form.addEventListener('reset', () => setTimeout(() => { syncUrl(); render(); }));
  form.addEventListener('submit', (e) => e.preventDefault());

  $('#traces tbody').addEventListener('click', (e) => {
    const button = e.target.closest('button[aria-controls]');
    if (!button) return;
    const key = button.getAttribute('data-focus').slice('toggle:'.length);
    if (expanded.has(key)) expanded.delete(key); else expanded.add(key);
    const open = expanded.has(key);
    button.setAttribute('aria-expanded', String(open));
    button.textContent = open ? '▾ History' : '▸ History';
    document.getElementById(button.getAttribute('aria-controls')).hidden = !open;
  });

  $('#signin').addEventListener('submit', (e) => {
    e.preventDefault();
    const token = $('#token').value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $('#token').value = '';
    connect();
  });
  $('#signout').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    live.gates.clear();
    live.traces.clear();
    showSignin();
  });
  setInterval(() => { if (!$('#board').hidden) queueRender(); }, 30000);
  connect();
});
