// kapsel dashboard: lists, then follows every kind with a streaming watch (no polling).
'use strict';

const $ = (s) => document.querySelector(s);
const KINDS = {
  nodes: '/api/v1/nodes',
  namespaces: '/api/v1/namespaces',
  deployments: '/apis/apps/v1/deployments',
  pods: '/api/v1/pods',
  events: '/api/v1/events',
};
const store = {};
const liveKinds = new Set();
let token = localStorage.getItem('kapselToken') || '';
let session = null; // AbortController of the running session
let logAbort = null;
let nodeUsage = {};
let usageFetched = 0;
const pending = new Set();
let timer = null;

function headers() { return token ? { Authorization: 'Bearer ' + token } : {}; }

async function get(path, signal) {
  const r = await fetch(path, { headers: headers(), signal, cache: 'no-store' });
  if (r.status === 401 || r.status === 403) {
    logout('The server refused the token (' + r.status + ').');
    throw new Error('unauthorized');
  }
  return r;
}

const sleep = (ms) => new Promise((res) => setTimeout(res, ms));
const key = (o) => (o.metadata.namespace ? o.metadata.namespace + '/' : '') + o.metadata.name;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function markLive() {
  $('#conn').classList.toggle('live', liveKinds.size === Object.keys(KINDS).length);
}

// List, then watch from the list's resourceVersion; relist when the watch ends or fails.
async function follow(kind, signal) {
  const base = KINDS[kind];
  const m = (store[kind] = new Map());
  while (!signal.aborted) {
    try {
      const r = await get(base, signal);
      if (!r.ok) throw new Error(kind + ': ' + r.status);
      const list = await r.json();
      m.clear();
      for (const o of list.items || []) m.set(key(o), o);
      dirty(kind);
      const w = await get(base + '?watch=1&allowWatchBookmarks=true&resourceVersion=' +
        encodeURIComponent(list.metadata.resourceVersion || ''), signal);
      if (!w.ok) throw new Error(kind + ' watch: ' + w.status);
      liveKinds.add(kind); markLive();
      const reader = w.body.getReader();
      const dec = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i).trim();
          buf = buf.slice(i + 1);
          if (!line) continue;
          const ev = JSON.parse(line);
          if (ev.type === 'ERROR') throw new Error('watch error: ' + (ev.object && ev.object.message));
          if (ev.type === 'BOOKMARK') continue;
          if (ev.type === 'DELETED') m.delete(key(ev.object)); else m.set(key(ev.object), ev.object);
          dirty(kind);
        }
      }
    } catch (e) {
      if (signal.aborted) return;
      console.warn(e);
    }
    liveKinds.delete(kind); markLive();
    await sleep(1000);
  }
}

function dirty(kind) {
  pending.add(kind);
  if (!timer) timer = setTimeout(flush, 40);
}

function flush() {
  timer = null;
  const kinds = new Set(pending);
  pending.clear();
  if (kinds.has('namespaces')) renderNamespaces();
  if (kinds.has('nodes') || kinds.has('pods')) renderNodes();
  if (kinds.has('deployments')) renderDeployments();
  if (kinds.has('pods')) renderPods();
  if (kinds.has('events')) renderEvents();
}

const nsFilter = () => $('#ns-filter').value;
function inNs(o) { const f = nsFilter(); return !f || o.metadata.namespace === f; }
function sorted(kind) {
  return [...(store[kind] || new Map()).values()].filter(inNs).sort((a, b) => key(a).localeCompare(key(b)));
}
function fill(table, rows) {
  const tb = $(table + ' tbody');
  tb.replaceChildren(...rows);
}
function label(o) { return nsFilter() ? o.metadata.name : key(o); }

function age(ts) {
  if (!ts) return '';
  let s = Math.max(0, (Date.now() - Date.parse(ts)) / 1000);
  if (s < 120) return Math.floor(s) + 's';
  s /= 60; if (s < 120) return Math.floor(s) + 'm';
  s /= 60; if (s < 48) return Math.floor(s) + 'h';
  return Math.floor(s / 24) + 'd';
}

// Quantities: "250m" cpu, "1Gi" memory, "123456n" nanocores.
function qty(q) {
  if (q === undefined || q === null) return 0;
  const m = String(q).match(/^([0-9.]+)([a-zA-Z]*)$/);
  if (!m) return 0;
  const mult = { n: 1e-9, u: 1e-6, m: 1e-3, '': 1, k: 1e3, K: 1e3, M: 1e6, G: 1e9, T: 1e12,
    Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, Ti: 1024 ** 4 }[m[2]];
  return parseFloat(m[1]) * (mult === undefined ? 1 : mult);
}
function bytes(n) {
  const u = ['B', 'Ki', 'Mi', 'Gi', 'Ti'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n.toFixed(0)) + u[i];
}
function bar(frac, text) {
  const td = el('td');
  const b = el('span', null, 'bar');
  const i = el('i');
  i.style.width = Math.round(Math.min(1, Math.max(0, frac)) * 100) + '%';
  b.append(i);
  td.append(b, el('span', text));
  return td;
}

async function refreshUsage() {
  // Usage changes with each node report; read it when the nodes' status moves, at most every 5 s.
  if (Date.now() - usageFetched < 5000 || !session) return;
  usageFetched = Date.now();
  try {
    const r = await get('/apis/metrics.k8s.io/v1beta1/nodes', session.signal);
    if (!r.ok) return;
    const l = await r.json();
    nodeUsage = {};
    for (const n of l.items || []) nodeUsage[n.metadata.name] = n.usage || {};
    renderNodes(true);
  } catch (e) { /* metrics are optional */ }
}

function renderNodes(fromUsage) {
  if (!fromUsage) refreshUsage();
  const pods = [...(store.pods || new Map()).values()];
  const rows = [...(store.nodes || new Map()).values()].sort((a, b) => key(a).localeCompare(key(b))).map((n) => {
    const st = n.status || {};
    const ready = (st.conditions || []).find((c) => c.type === 'Ready');
    const ok = ready && ready.status === 'True';
    const alloc = st.allocatable || {};
    const u = nodeUsage[n.metadata.name] || {};
    const tr = el('tr');
    tr.dataset.node = n.metadata.name;
    const unsched = n.spec && n.spec.unschedulable ? ',SchedulingDisabled' : '';
    tr.append(el('td', n.metadata.name), el('td', (ok ? 'Ready' : 'NotReady') + unsched, ok ? 'ok' : 'bad'));
    const cpu = qty(u.cpu), cpuA = qty(alloc.cpu);
    const mem = qty(u.memory), memA = qty(alloc.memory);
    tr.append(bar(cpuA ? cpu / cpuA : 0, u.cpu ? Math.round(cpu * 1000) + 'm / ' + cpuA + ' cores' : '—'));
    tr.append(bar(memA ? mem / memA : 0, u.memory ? bytes(mem) + ' / ' + bytes(memA) : '—'));
    const count = pods.filter((p) => p.spec && p.spec.nodeName === n.metadata.name &&
      !['Succeeded', 'Failed'].includes((p.status || {}).phase)).length;
    tr.append(el('td', count + ' / ' + (alloc.pods || '?')));
    return tr;
  });
  fill('#nodes', rows);
}

function renderNamespaces() {
  const names = [...(store.namespaces || new Map()).values()].map((n) => n.metadata.name).sort();
  $('#namespaces').replaceChildren(...names.map((n) => {
    const li = el('li', n);
    const phase = ((store.namespaces.get(n) || {}).status || {}).phase;
    if (phase === 'Terminating') li.classList.add('warn');
    return li;
  }));
  const sel = $('#ns-filter');
  const cur = sel.value;
  sel.replaceChildren(el('option', 'all namespaces'), ...names.map((n) => el('option', n)));
  sel.options[0].value = '';
  sel.value = names.includes(cur) ? cur : '';
}

function rollout(d) {
  const spec = d.spec || {}, st = d.status || {};
  const want = spec.replicas === undefined ? 1 : spec.replicas;
  const upd = st.updatedReplicas || 0, avail = st.availableReplicas || 0, total = st.replicas || 0;
  const rev = ((d.metadata.annotations || {})['deployment.kubernetes.io/revision']) || '?';
  const gen = d.metadata.generation || 0, seen = st.observedGeneration || 0;
  const cond = (st.conditions || []).find((c) => c.type === 'Progressing');
  let text, cls;
  if (cond && cond.reason === 'ProgressDeadlineExceeded') { text = 'failed: progress deadline exceeded'; cls = 'bad'; }
  else if (seen < gen) { text = 'waiting for the controller'; cls = 'muted'; }
  else if (upd === want && avail === want && total === want) { text = 'complete'; cls = 'ok'; }
  else { text = 'progressing: ' + upd + ' of ' + want + ' updated'; cls = 'warn'; }
  return { frac: want ? Math.min(upd, avail) / want : 1, text: 'rev ' + rev + ' ' + text, cls, want, upd, avail, st };
}

function renderDeployments() {
  fill('#deployments', sorted('deployments').map((d) => {
    const r = rollout(d);
    const tr = el('tr');
    tr.dataset.deploy = key(d);
    const cell = bar(r.frac, r.text);
    cell.classList.add('rollout', r.cls);
    tr.append(el('td', label(d)), cell, el('td', (r.st.readyReplicas || 0) + '/' + r.want),
      el('td', r.upd), el('td', r.avail));
    return tr;
  }));
}

// kubectl's STATUS column.
function podStatus(p) {
  const st = p.status || {};
  if (p.metadata.deletionTimestamp) return 'Terminating';
  let reason = st.reason || st.phase || 'Pending';
  for (const c of st.containerStatuses || []) {
    const s = c.state || {};
    if (s.waiting && s.waiting.reason) reason = s.waiting.reason;
    else if (s.terminated && s.terminated.reason) reason = s.terminated.reason;
  }
  return reason;
}

function renderPods() {
  fill('#pods', sorted('pods').map((p) => {
    const st = p.status || {};
    const cs = st.containerStatuses || [];
    const ready = cs.filter((c) => c.ready).length;
    const restarts = cs.reduce((a, c) => a + (c.restartCount || 0), 0);
    const s = podStatus(p);
    const cls = s === 'Running' && ready === cs.length ? 'ok' : ['Succeeded', 'Completed'].includes(s) ? 'muted' : /Err|BackOff|Fail|Evicted|OOM/.test(s) ? 'bad' : 'warn';
    const tr = el('tr', null, 'click');
    tr.dataset.pod = key(p);
    tr.title = 'show logs';
    tr.append(el('td', label(p)), el('td', s + ' ' + ready + '/' + ((p.spec || {}).containers || []).length, cls),
      el('td', restarts, restarts ? 'warn' : ''), el('td', (p.spec || {}).nodeName || '—'),
      el('td', age(p.metadata.creationTimestamp)));
    tr.addEventListener('click', () => openLogs(p));
    return tr;
  }));
}

function renderEvents() {
  const evs = [...(store.events || new Map()).values()].filter(inNs);
  const when = (e) => Date.parse(e.lastTimestamp || (e.series || {}).lastObservedTime || e.eventTime || e.metadata.creationTimestamp) || 0;
  evs.sort((a, b) => when(b) - when(a));
  fill('#events', evs.slice(0, 100).map((e) => {
    const io = e.involvedObject || {};
    const tr = el('tr');
    tr.dataset.reason = e.reason || '';
    const warn = e.type === 'Warning' ? 'warn' : '';
    const count = e.count || (e.series || {}).count || 1;
    const reason = el('td', e.reason, warn);
    if (count > 1) reason.append(el('span', ' ×' + count, 'phone'));
    tr.append(el('td', age(new Date(when(e)).toISOString())), el('td', e.type, warn),
      reason, el('td', (io.kind || '').toLowerCase() + '/' + (io.name || '')),
      el('td', count), el('td', e.message, 'msg'));
    return tr;
  }));
}

async function openLogs(p) {
  if (logAbort) logAbort.abort();
  logAbort = new AbortController();
  const sig = logAbort.signal;
  const pre = $('#log-pre');
  pre.textContent = '';
  $('#logs').hidden = false;
  const c = ((p.spec || {}).containers || [])[0];
  $('#log-title').textContent = key(p) + (c ? ' (' + c.name + ')' : '');
  $('#logs').scrollIntoView({ block: 'nearest' });
  const url = '/api/v1/namespaces/' + encodeURIComponent(p.metadata.namespace) + '/pods/' +
    encodeURIComponent(p.metadata.name) + '/log?follow=true&tailLines=500' + (c ? '&container=' + encodeURIComponent(c.name) : '');
  try {
    const r = await get(url, sig);
    if (!r.ok) {
      const s = await r.json().catch(() => ({}));
      pre.textContent = 'error: ' + (s.message || r.status);
      return;
    }
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.append(dec.decode(value, { stream: true }));
      if (pre.textContent.length > 400000) pre.textContent = pre.textContent.slice(-200000);
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    }
    pre.append('\n— end of log —');
  } catch (e) {
    if (!sig.aborted) pre.append('\n— ' + e.message + ' —');
  }
}

function start() {
  $('#login').hidden = true;
  $('#app').hidden = false;
  $('#logout').hidden = false;
  session = new AbortController();
  for (const k of Object.keys(KINDS)) follow(k, session.signal);
}

function logout(msg) {
  if (session) session.abort();
  if (logAbort) logAbort.abort();
  session = null;
  liveKinds.clear(); markLive();
  token = '';
  localStorage.removeItem('kapselToken');
  $('#app').hidden = true;
  $('#logout').hidden = true;
  $('#login').hidden = false;
  $('#login-error').textContent = msg || '';
}

$('#login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const t = $('#login-token').value.trim();
  $('#login-error').textContent = '';
  try {
    const r = await fetch('/api/v1/namespaces?limit=1', { headers: t ? { Authorization: 'Bearer ' + t } : {} });
    if (r.status === 401 || r.status === 403) { $('#login-error').textContent = 'The server refused this token.'; return; }
    if (!r.ok) { $('#login-error').textContent = 'The server answered ' + r.status + '.'; return; }
  } catch (e) { $('#login-error').textContent = 'Cannot reach the server: ' + e.message; return; }
  token = t;
  localStorage.setItem('kapselToken', t);
  $('#login-token').value = '';
  start();
});
$('#logout').addEventListener('click', () => logout(''));
$('#log-close').addEventListener('click', () => { if (logAbort) logAbort.abort(); $('#logs').hidden = true; });
$('#ns-filter').addEventListener('change', () => { for (const k of Object.keys(KINDS)) dirty(k); });
setInterval(() => { if (session) { dirty('pods'); dirty('events'); } }, 30000); // ages only; no requests

if (token) start(); else logout('');
