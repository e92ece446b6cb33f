// The gmv console: plain JS over the REST API. The API key lives in this tab's session
// storage and goes in a header; players get play tokens from the API, never the key.
'use strict';

const KEY_STORE = 'gmv-api-key';
const EVENTS_SHOWN_MAX = 500;
const STATS_INTERVAL_MS = 2000;
// A stream that has taken no packet for this long shows why on its tile.
const NO_MEDIA_SHOWN_AFTER_MS = 3000;
let apiKey = sessionStorage.getItem(KEY_STORE) || '';

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
};

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// What an operator should read instead of a code.
function readable(err) {
  const byCode = {
    device_offline: 'Device offline',
    device_timeout: 'The device did not answer',
    device_rejected: 'The device refused',
    device_error: 'The device reported an error',
    forbidden: 'No permission for this (your key\'s role is too low)',
    unauthorized: 'Not signed in (or the key was revoked)',
    not_found: 'Not found',
    busy: 'Too busy, try again',
    standby: 'This control is standby',
  };
  if (err instanceof ApiError) return (byCode[err.code] || `Error ${err.status}`) + (err.message ? `: ${err.message}` : '');
  return String(err && err.message || err);
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${apiKey}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let v = null;
  try { v = await r.json(); } catch (_) { /* not JSON */ }
  if (!r.ok) throw new ApiError(r.status, v && v.code, v && v.message);
  return v;
}

// ---- sign in ----

async function signIn(key) {
  apiKey = key;
  await api('GET', '/api/devices');
  sessionStorage.setItem(KEY_STORE, key);
  $('#signin').hidden = true;
  $('#app').hidden = false;
  show('devices');
  followEvents();
}

$('#signin-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  $('#signin-error').textContent = '';
  try {
    await signIn($('#key').value.trim());
  } catch (err) {
    $('#signin-error').textContent = err.status === 401 ? 'That key is not valid.' : readable(err);
  }
});

$('#signout').addEventListener('click', () => {
  sessionStorage.removeItem(KEY_STORE);
  location.reload();
});

// ---- views ----

let refreshTimer = null;
function show(view) {
  for (const b of document.querySelectorAll('nav button')) b.classList.toggle('active', b.dataset.view === view);
  for (const v of document.querySelectorAll('.view')) v.hidden = v.id !== `view-${view}`;
  clearInterval(refreshTimer);
  // Tiles unload while another view is shown (no bandwidth for pictures nobody sees) and load
  // again on return.
  if (view === 'wall') resumeTiles();
  else suspendTiles();
  if (view !== 'playback') stopPlayback();
  if (view === 'devices') loadDevices();
  if (view === 'playback') {
    loadDevices()
      .then(() => Promise.all(devices.filter((d) => d.online && !channelsOf.get(d.device_id)).slice(0, PLAYBACK_DEVICES_MAX).map(loadChannels)))
      .then(() => { fillChannels(); loadTimeline(); });
  }
  if (view === 'streams') {
    loadStreams();
    refreshTimer = setInterval(loadStreams, 3000);
  }
  if (view === 'nodes') {
    loadNodes();
    refreshTimer = setInterval(loadNodes, 3000);
  }
}
for (const b of document.querySelectorAll('nav button')) b.addEventListener('click', () => show(b.dataset.view));

// ---- devices ----

let devices = [];
const channelsOf = new Map();
/// Channel id -> cover URL (with a play token) of its live session, for thumbnails.
const covers = new Map();
const COVERS_MAX = 50;
/// Devices fetched for the tree (pages of PAGE), and shown expanded without a click when
/// there are at most AUTO_EXPAND_MAX.
const DEVICES_FETCH_MAX = 50000;
const PAGE = 1000;
const AUTO_EXPAND_MAX = 20;
const SEARCH_EXPAND_MAX = 200;
/// Online devices whose channels the playback view lists.
const PLAYBACK_DEVICES_MAX = 100;
const openDetails = new Set();
const expanded = new Set();
const collapsed = new Set();
/// Row heights of the virtual tree (px), and rows drawn beyond the visible ones.
const ROW_PX = { device: 40, channel: 46, details: 250, note: 30 };
const OVERSCAN_ROWS = 10;

// Each load of the list (and of a device's channels) is numbered: an answer to an older one that
// arrives after a newer one started is dropped, or a slow unfiltered load finishing after a
// search would put the whole list back under the search box.
let devicesLoad = 0;
let channelsLoad = 0;

async function loadDevices() {
  const load = ++devicesLoad;
  try {
    const q = $('#device-filter').value.trim();
    const online = $('#online-only').checked ? '&online=true' : '';
    const found = [];
    let total = Infinity;
    while (found.length < Math.min(total, DEVICES_FETCH_MAX)) {
      const page = await api('GET', `/api/devices?offset=${found.length}&limit=${PAGE}&q=${encodeURIComponent(q)}${online}`);
      if (load !== devicesLoad) return;
      total = page.total;
      found.push(...page.devices);
      if (!page.devices.length) break;
    }
    devices = found;
    devices.total = total;
    const { sessions } = await api('GET', '/api/sessions');
    if (load !== devicesLoad) return;
    await Promise.all(sessions.filter((s) => s.kind === 'live').slice(0, COVERS_MAX).map(async (s) => {
      if (covers.has(s.channel_id)) return;
      try {
        const t = await api('POST', '/api/play-tokens', { stream_id: s.stream_id });
        covers.set(s.channel_id, `/cover/${s.stream_id}.jpg?token=${t.token}`);
      } catch (_) { /* no thumbnail */ }
    }));
    if (load !== devicesLoad) return;
    renderDevices();
  } catch (err) {
    if (load !== devicesLoad) return;
    $('#device-tree').replaceChildren(el('div', { class: 'error' }, readable(err)));
  }
}

function isExpanded(d) {
  if (collapsed.has(d.device_id)) return false;
  const searching = $('#device-filter').value.trim() !== '';
  return expanded.has(d.device_id) || devices.length <= AUTO_EXPAND_MAX || (searching && devices.length <= SEARCH_EXPAND_MAX);
}

// A device's channels, asked when it is first expanded.
async function loadChannels(d) {
  const load = channelsLoad;
  channelsOf.set(d.device_id, null); // asking
  let channels = [];
  try {
    const q = encodeURIComponent($('#device-filter').value.trim());
    channels = (await api('GET', `/api/devices/${d.device_id}/channels?limit=${PAGE}&q=${q}`)).channels;
    // A search matching the device itself shows all its channels.
    if (!channels.length && q) channels = (await api('GET', `/api/devices/${d.device_id}/channels?limit=${PAGE}`)).channels;
  } catch (err) { /* shown as a device without channels */ }
  if (load !== channelsLoad) return; // asked under an earlier search
  channelsOf.set(d.device_id, channels);
  renderDevices();
}

// The tree as flat rows of known heights: only those in view are in the page.
let rows = [];
let offsets = [];
function renderDevices() {
  rows = [];
  for (const d of devices) {
    rows.push({ kind: 'device', d });
    if (openDetails.has(d.device_id)) rows.push({ kind: 'details', d });
    if (!isExpanded(d)) continue;
    const channels = channelsOf.get(d.device_id);
    if (channels === undefined) loadChannels(d);
    if (!channels) rows.push({ kind: 'note', d, text: 'asking for channels…' });
    else for (const c of channels) rows.push({ kind: 'channel', d, c });
  }
  offsets = [];
  let y = 0;
  for (const r of rows) {
    offsets.push(y);
    y += ROW_PX[r.kind];
  }
  $('#tree-space').style.height = `${y}px`;
  $('#device-count').textContent = `${devices.length} of ${devices.total ?? devices.length} devices`;
  drawVisibleRows();
}

function drawVisibleRows() {
  const scroller = $('#tree-scroll');
  const top = scroller.scrollTop;
  const bottom = top + scroller.clientHeight;
  let lo = 0;
  let hi = rows.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (offsets[mid] + ROW_PX[rows[mid].kind] <= top) lo = mid + 1; else hi = mid;
  }
  const first = Math.max(0, lo - OVERSCAN_ROWS);
  const drawn = [];
  for (let i = first; i < rows.length && (i < lo || offsets[i] < bottom || i < lo + OVERSCAN_ROWS); i++) {
    const node = rowNode(rows[i]);
    node.style.top = `${offsets[i]}px`;
    node.style.height = `${ROW_PX[rows[i].kind]}px`;
    drawn.push(node);
  }
  $('#device-tree').replaceChildren(...drawn);
}

function rowNode(r) {
  const d = r.d;
  if (r.kind === 'device') {
    const info = [d.info.manufacturer, d.info.model].filter(Boolean).join(' ');
    const open = isExpanded(d);
    return el('div', { class: 'row device', dataset: { testid: `device-${d.device_id}` } },
      el('button', { class: 'toggle', title: open ? 'hide channels' : 'show channels', dataset: { testid: `expand-${d.device_id}` }, onclick: () => {
        if (open) { expanded.delete(d.device_id); collapsed.add(d.device_id); } else { collapsed.delete(d.device_id); expanded.add(d.device_id); }
        renderDevices();
      } }, open ? '▾' : '▸'), ' ',
      el('span', { class: `dot ${d.online ? 'on' : ''}` }), ' ',
      el('strong', { class: 'device-id', title: 'details', onclick: () => {
        if (openDetails.has(d.device_id)) openDetails.delete(d.device_id); else openDetails.add(d.device_id);
        renderDevices();
      } }, d.device_id), ' ',
      el('span', { class: 'muted' }, `${info} · ${d.online ? 'online' : 'offline'} · ${d.channel_count} channels${d.last_error ? ' · ' + d.last_error : ''}`), ' ',
      el('button', { onclick: async () => { try { await api('POST', `/api/devices/${d.device_id}/sync`); } catch (err) { alert(readable(err)); } } }, 'sync'));
  }
  if (r.kind === 'details') {
    const box = el('div', { class: 'row details', dataset: { testid: `details-${d.device_id}` } });
    fillDetails(box, d);
    return box;
  }
  if (r.kind === 'note') return el('div', { class: 'row note muted' }, r.text);
  const c = r.c;
  const cover = covers.get(c.device_id);
  return el('div', { class: 'row channel', dataset: { testid: `channel-${c.device_id}` } },
    cover ? el('img', { class: 'cover', src: cover, alt: '', loading: 'lazy' }) : el('span', { class: 'cover' }),
    el('span', { class: `dot ${c.status === 'ON' ? 'on' : ''}` }),
    el('span', {}, c.name || c.device_id),
    el('span', { class: 'muted' }, c.device_id),
    el('button', { title: 'Play in the wall', dataset: { testid: `play-${c.device_id}` }, onclick: () => wallPlay(d.device_id, c.device_id, c.name || c.device_id) }, '▶'));
}

// DeviceInfo, the last DeviceStatus (and a button to ask again), subscriptions, position.
function fillDetails(box, d) {
  const row = (k, v) => el('div', {}, el('span', { class: 'muted' }, `${k}: `), v === undefined || v === null || v === '' ? '—' : String(v));
  const status = d.status ? `${d.status.online} · ${d.status.status} · encode ${d.status.encode} · record ${d.status.record} · clock ${d.status.device_time}` : null;
  const subs = (d.subscriptions || []).map((s) => `${s.kind}${s.active ? '' : ' (not active)'}`).join(', ');
  const pos = d.position ? `${d.position.latitude}, ${d.position.longitude} at ${d.position.time}` : null;
  box.replaceChildren(
    row('name', d.info.device_name), row('manufacturer', d.info.manufacturer), row('model', d.info.model),
    row('firmware', d.info.firmware), row('address', d.addr), row('GB/T 28181', d.gb_version ? `X-GB-Ver ${d.gb_version}` : '2016 (no X-GB-Ver)'),
    row('status', status), row('subscriptions', subs), row('position', pos), row('last error', d.last_error),
    el('button', { dataset: { testid: `status-${d.device_id}` }, onclick: async (e) => {
      e.target.textContent = 'asking…';
      try { await api('GET', `/api/devices/${d.device_id}/status`); await loadDevices(); } catch (err) { e.target.textContent = readable(err); }
    } }, 'ask status'));
}

let searchTimer = null;
$('#device-filter').addEventListener('input', () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => { channelsLoad += 1; channelsOf.clear(); loadDevices(); }, 250);
});
$('#online-only').addEventListener('change', loadDevices);
$('#tree-scroll').addEventListener('scroll', drawVisibleRows);

// ---- live wall ----

const tiles = [];
let selected = -1;

function layout(n) {
  while (tiles.length > n) stopTile(tiles.pop());
  if (selected >= n) selected = -1;
  while (tiles.length < n) tiles.push({ index: tiles.length });
  $('#wall').style.setProperty('--cols', String(Math.ceil(Math.sqrt(n))));
  renderWall();
}
$('#layout').addEventListener('change', (e) => layout(Number(e.target.value)));

function renderWall() {
  $('#wall').replaceChildren(...tiles.map((t, i) => {
    if (!t.node) {
      t.video = el('video', { muted: '', autoplay: '', playsinline: '' });
      t.video.muted = true;
      t.message = el('div', { class: 'message' }, 'empty');
      t.name = el('span', { class: 'name' }, '');
      t.stats = el('div', { class: 'stats' }, '');
      t.node = el('div', { class: 'tile empty', dataset: { testid: `tile-${i}` }, onclick: () => selectTile(i) },
        t.video, t.message,
        el('div', { class: 'label' }, t.name,
          el('button', { title: 'Sound on/off', onclick: (e) => { e.stopPropagation(); t.video.muted = !t.video.muted; e.target.textContent = t.video.muted ? 'sound' : 'mute'; } }, 'sound'),
          el('button', { title: 'Snapshot', onclick: (e) => { e.stopPropagation(); snapshot(t); } }, 'snap'),
          el('button', { title: 'Full screen', onclick: (e) => { e.stopPropagation(); t.node.requestFullscreen && t.node.requestFullscreen(); } }, 'full'),
          el('button', { title: 'Close', onclick: (e) => { e.stopPropagation(); stopTile(t); } }, '✕')),
        t.stats);
    }
    t.node.classList.toggle('selected', i === selected);
    return t.node;
  }));
}

function selectTile(i) {
  const changed = selected !== i;
  selected = i;
  const t = tiles[i];
  $('#ptz-target').textContent = t && t.channel ? t.label : '(select a tile)';
  renderWall();
  if (changed) loadPresets();
}

// The selected channel's presets (PresetQuery), each with go and delete.
async function loadPresets() {
  const t = tiles[selected];
  const list = $('#presets');
  if (!t || !t.device) { list.replaceChildren(); return; }
  list.replaceChildren(el('li', { class: 'muted' }, 'asking…'));
  try {
    const { presets } = await api('GET', `/api/devices/${t.device}/channels/${t.channel}/presets`);
    const base = `/api/devices/${t.device}/channels/${t.channel}/presets`;
    list.replaceChildren(...presets.map((p) => el('li', { dataset: { testid: `preset-${p.id}` } },
      el('span', {}, `${p.id} ${p.name}`),
      el('button', { dataset: { testid: `preset-call-${p.id}` }, onclick: () => presetAction('POST', `${base}/${p.id}/call`, false) }, 'go'),
      el('button', { title: 'delete', onclick: () => presetAction('DELETE', `${base}/${p.id}`, true) }, '✕'))));
    if (!presets.length) list.replaceChildren(el('li', { class: 'muted' }, 'no presets'));
  } catch (err) {
    list.replaceChildren(el('li', { class: 'error' }, readable(err)));
  }
}

async function presetAction(method, path, reload) {
  $('#ptz-error').textContent = '';
  try {
    await api(method, path);
    if (reload) loadPresets();
  } catch (err) {
    $('#ptz-error').textContent = readable(err);
  }
}

$('#preset-set').addEventListener('click', () => {
  const t = tiles[selected];
  const n = Number($('#preset-new').value);
  if (!t || !t.device || !(n >= 1 && n <= 255)) { $('#ptz-error').textContent = 'Select a device tile and a preset number 1..255'; return; }
  presetAction('POST', `/api/devices/${t.device}/channels/${t.channel}/presets/${n}`, true);
});

function suspendTiles() {
  for (const t of tiles) {
    if (t.player) { t.player.destroy(); t.player = null; }
    clearInterval(t.timer);
  }
}

function resumeTiles() {
  for (const t of tiles) {
    if (t.channel && !t.player) wallPlay(t.device, t.channel, t.label, t, t.useHls);
  }
}

function stopTile(t) {
  if (t.player) { t.player.destroy(); t.player = null; }
  t.useHls = false;
  t.video && t.video.removeAttribute('src');
  clearInterval(t.timer);
  Object.assign(t, { device: null, channel: null, streamId: null, label: '', noMedia: '' });
  if (t.node) {
    t.node.classList.add('empty');
    t.message.textContent = 'empty';
    t.name.textContent = '';
    t.stats.textContent = '';
  }
}

async function wallPlay(deviceId, channelId, label, into, hls) {
  const t = into || tiles.find((x) => !x.channel) || tiles[Math.max(selected, 0)] || tiles[0];
  stopTile(t);
  t.useHls = Boolean(hls) || $('#player').value === 'hls';
  Object.assign(t, { device: deviceId, channel: channelId, label });
  t.name.textContent = label;
  t.message.textContent = 'Connecting…';
  t.node.classList.remove('empty');
  selectTile(t.index);
  $('#device-count').textContent = `${label}: tile ${t.index + 1} of the live wall`;
  try {
    // A device's channel is invited; a bare stream (deviceId null) only needs a play token.
    const session = deviceId
      ? await api('POST', `/api/devices/${deviceId}/channels/${channelId}/play`, {})
      : { stream_id: channelId, play: (await api('POST', '/api/play-tokens', { stream_id: channelId })).play };
    if (t.channel !== channelId || t.player) return; // replaced meanwhile
    t.streamId = session.stream_id;
    if (!window.mpegts || !mpegts.isSupported() || t.useHls) {
      // HLS instead: through hls.js, or natively where the browser plays it (iOS Safari).
      playHls(t, session);
      t.message.textContent = '';
      return;
    }
    const url = new URL(session.play.flv, location.href);
    url.host = location.host; // the answer names the host the API was asked at
    // Over a WebSocket: a browser opens six HTTP/1.1 connections to one origin, not sixteen.
    url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    t.player = mpegts.createPlayer({ type: 'flv', isLive: true, url: url.href }, { enableStashBuffer: false, liveBufferLatencyChasing: true });
    t.player.on(mpegts.Events.ERROR, (type, detail) => {
      // FLV failed (a codec MSE refuses, a proxy that drops WebSockets): HLS once.
      if (!t.useHls && window.Hls && Hls.isSupported()) {
        wallPlay(t.device, t.channel, t.label, t, true);
        return;
      }
      t.message.textContent = `Playback error: ${type} ${detail}`;
    });
    t.player.attachMediaElement(t.video);
    t.player.load();
    t.video.play().catch(() => {});
    t.message.textContent = '';
    let frames = 0;
    t.timer = setInterval(async () => {
      const q = t.video.getVideoPlaybackQuality ? t.video.getVideoPlaybackQuality() : { totalVideoFrames: 0 };
      const fps = Math.round((q.totalVideoFrames - frames) * 1000 / STATS_INTERVAL_MS);
      frames = q.totalVideoFrames;
      try {
        const s = await api('GET', `/api/streams/${t.streamId}`);
        t.stats.textContent = `${s.video_codec || '?'} ${s.width || '?'}×${s.height || '?'} · ${s.bitrate_kbps} kbit/s · ${fps} fps · lost ${s.lost}`;
        // Nothing taken yet: say why on the tile (what arrived from where, or nothing at all).
        const noMedia = s.no_media && s.age_ms >= NO_MEDIA_SHOWN_AFTER_MS ? `No video yet: ${s.no_media}` : '';
        if (noMedia || t.noMedia) t.message.textContent = noMedia;
        t.noMedia = noMedia;
      } catch (err) {
        // The stream closed: keep what it said while it waited, if it never got media.
        t.stats.textContent = readable(err);
        if (t.noMedia) t.message.textContent = t.noMedia.replace('No video yet', 'Closed without video');
      }
    }, STATS_INTERVAL_MS);
  } catch (err) {
    t.message.textContent = readable(err);
  }
}

function playHls(t, session) {
  const url = new URL(session.play.hls, location.href);
  url.host = location.host;
  // hls.js where Media Source Extensions exist; the browser's own HLS (iOS Safari) otherwise.
  if (window.Hls && Hls.isSupported()) {
    const hls = new Hls({ liveSyncDurationCount: 2 });
    hls.loadSource(url.href);
    hls.attachMedia(t.video);
    t.player = { destroy: () => hls.destroy() };
  } else if (t.video.canPlayType('application/vnd.apple.mpegurl')) {
    t.video.src = url.href;
  } else {
    t.message.textContent = 'This browser plays neither FLV (Media Source Extensions) nor HLS';
    return;
  }
  t.video.play().catch(() => {});
}

async function snapshot(t) {
  if (!t.streamId) return;
  try {
    const r = await fetch(`/api/streams/${t.streamId}/snapshot`, { headers: { Authorization: `Bearer ${apiKey}` } });
    if (!r.ok) throw new ApiError(r.status, 'no_snapshot', await r.text());
    const a = el('a', { href: URL.createObjectURL(await r.blob()), download: `${t.streamId}.jpg` });
    a.click();
  } catch (err) {
    t.message.textContent = readable(err);
  }
}

// PTZ: press and hold to move, release to stop.
const PTZ_MOVES = { up: { tilt: 1 }, down: { tilt: -1 }, left: { pan: -1 }, right: { pan: 1 }, in: { zoom: 1 }, out: { zoom: -1 } };
async function ptz(body) {
  const t = tiles[selected];
  $('#ptz-error').textContent = '';
  if (!t || !t.channel) { $('#ptz-error').textContent = 'Select a playing tile first'; return; }
  if (!t.device) { $('#ptz-error').textContent = 'PTZ moves a device\'s channel; this tile plays a bare stream'; return; }
  try {
    await api('POST', `/api/devices/${t.device}/channels/${t.channel}/ptz`, body);
  } catch (err) {
    $('#ptz-error').textContent = readable(err);
  }
}
for (const b of document.querySelectorAll('[data-ptz]')) {
  const move = PTZ_MOVES[b.dataset.ptz];
  let moving = false;
  const start = (e) => { e.preventDefault(); moving = true; ptz({ ...move, speed: 0.5 }); };
  const stop = () => { if (moving) { moving = false; ptz({}); } };
  b.addEventListener('pointerdown', start);
  b.addEventListener('pointerup', stop);
  b.addEventListener('pointerleave', stop);
}

// ---- streams ----

async function loadStreams() {
  try {
    const { streams } = await api('GET', '/api/streams');
    $('#stream-rows').replaceChildren(...streams.map((s) => el('tr', {},
      el('td', {}, s.stream_id), el('td', {}, s.video_codec || '—'), el('td', {}, s.width ? `${s.width}×${s.height}` : '—'),
      el('td', {}, String(s.bitrate_kbps)), el('td', {}, String(s.packets)), el('td', {}, String(s.lost)),
      el('td', {}, String(s.subscribers)), el('td', {}, s.transport || '—'),
      el('td', {}, el('button', { title: 'Play in the wall', dataset: { testid: `play-stream-${s.stream_id}` }, onclick: () => { wallPlay(null, s.stream_id, `stream ${s.stream_id}`); show('wall'); } }, '▶')))));
    const sip = await api('GET', '/api/sip');
    $('#sip-counters').textContent = JSON.stringify(sip.counters, null, 1);
  } catch (err) {
    $('#stream-rows').replaceChildren(el('tr', {}, el('td', { class: 'error' }, readable(err))));
  }
}

// ---- nodes: this control's place (active or standby) and the media nodes it places on ----

function controlText(c) {
  if (!c) return 'SIP is disabled: no control plane here.';
  if (c.mode === 'single') return 'This control keeps its own registry (SQLite).';
  if (c.mode === 'active') return `This control (${c.instance}) is active: it holds the shared registry's lease (epoch ${c.epoch}).`;
  return `This control (${c.instance}) is standby: the active control is ${c.leader || '(none yet)'}. Plays and changes go there.`;
}

async function loadNodes() {
  try {
    const health = await api('GET', '/api/health');
    $('#control-state').textContent = controlText(health.control);
    let nodes;
    try {
      ({ nodes } = await api('GET', '/api/nodes'));
    } catch (err) {
      if (err.code !== 'not_control') throw err;
      $('#node-table').hidden = true;
      $('#nodes-note').textContent = 'All in one: every stream runs in this process (media nodes are for node.role control).';
      return;
    }
    $('#node-table').hidden = false;
    $('#nodes-note').textContent = nodes.length ? '' : 'No media node yet: list them in node.media_nodes, or let them announce themselves.';
    $('#node-rows').replaceChildren(...nodes.map((n) => el('tr', { dataset: { testid: `node-${n.id}` } },
      el('td', { title: `${n.api} (media ${n.media_ip})` }, n.id),
      el('td', { class: `state ${n.state}${n.draining ? ' draining' : ''}`, dataset: { testid: `node-state-${n.id}` } }, n.draining ? `${n.state}, draining` : n.state),
      el('td', {}, String(n.load.streams)), el('td', {}, String(n.placed)), el('td', {}, String(n.load.viewers)),
      el('td', {}, (n.load.ingest_kbps / 1000).toFixed(1)), el('td', {}, `${Math.round(n.load.cpu_percent)} %`),
      el('td', {}, n.last_keepalive_s_ago == null ? 'never' : `${n.last_keepalive_s_ago} s ago`),
      el('td', {}, el('button', {
        title: n.draining ? 'Place new streams here again' : 'Place no new stream here (its streams stay)',
        dataset: { testid: `drain-${n.id}` },
        onclick: () => drain(n.id, !n.draining),
      }, n.draining ? 'undrain' : 'drain')))));
  } catch (err) {
    $('#nodes-note').textContent = readable(err);
  }
}

async function drain(id, on) {
  try {
    await api(on ? 'POST' : 'DELETE', `/api/nodes/${encodeURIComponent(id)}/drain`);
  } catch (err) {
    $('#nodes-note').textContent = readable(err);
    return;
  }
  loadNodes();
}

// ---- events (SSE over fetch, so the key goes in a header) ----

let lastEventId = null;
async function followEvents() {
  for (;;) {
    try {
      const headers = { Authorization: `Bearer ${apiKey}`, Accept: 'text/event-stream' };
      if (lastEventId !== null) headers['Last-Event-ID'] = String(lastEventId);
      const r = await fetch('/api/events', { headers });
      if (!r.ok) throw new ApiError(r.status, 'events', '');
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let end;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          const data = block.split('\n').find((l) => l.startsWith('data: '));
          if (data) addEvent(JSON.parse(data.slice(6)));
        }
      }
    } catch (_) { /* reconnect below */ }
    await new Promise((r) => setTimeout(r, 2000));
  }
}

function addEvent(e) {
  lastEventId = e.id;
  const time = new Date(e.at_ms).toLocaleTimeString();
  const what = e.kind === 'alarm' ? `${e.data.description || 'alarm'} (priority ${e.data.priority})` : (e.data.why || e.data.reason || e.data.stream_id || '');
  const li = el('li', { dataset: { testid: `event-${e.kind}` } },
    el('span', { class: 'muted' }, time), ' ',
    el('span', { class: `kind ${e.kind}` }, e.kind),
    `${e.device_id || ''}${e.channel_id ? ' / ' + e.channel_id : ''} ${what}`);
  const log = $('#event-log');
  log.prepend(li);
  while (log.children.length > EVENTS_SHOWN_MAX) log.lastChild.remove();
}

layout(4);
if (apiKey) signIn(apiKey).catch(() => sessionStorage.removeItem(KEY_STORE));

// ---- playback of recordings (device and gmv) on one timeline ----

const DAY_S = 86400;
const DOWNLOAD_POLL_MS = 1000;
const pb = { from: 0, to: 0, ranges: [], session: null, player: null, paused: false, range: null };

function fillChannels() {
  const select = $('#pb-channel');
  const keep = select.value;
  select.replaceChildren(...devices.flatMap((d) => (channelsOf.get(d.device_id) || []).map((c) =>
    el('option', { value: c.device_id }, `${c.name || c.device_id} (${c.device_id})`))));
  if (keep) select.value = keep;
}

async function loadTimeline() {
  const channel = $('#pb-channel').value;
  if (!channel) return;
  pb.to = Math.floor(Date.now() / 1000);
  pb.from = pb.to - DAY_S;
  $('#pb-note').textContent = 'asking the device…';
  try {
    const t = await api('GET', `/api/channels/${channel}/timeline?start=${pb.from}&end=${pb.to}`);
    pb.ranges = t.ranges;
    const note = t.device.error ? `device: ${t.device.error}` : (t.device.complete ? '' : 'the device\'s list may be incomplete');
    $('#pb-note').textContent = `${t.ranges.length} recordings ${note}`;
    renderTimeline();
  } catch (err) {
    $('#pb-note').textContent = readable(err);
  }
}

const xOf = (t) => `${((t - pb.from) / (pb.to - pb.from)) * 100}%`;

function renderTimeline() {
  const line = $('#timeline');
  const cursor = $('#pb-cursor');
  line.replaceChildren(cursor, ...pb.ranges.map((r, i) => el('div', {
    class: `range ${r.source}`, title: `${r.source} ${new Date(r.start * 1000).toLocaleString()} – ${new Date(r.end * 1000).toLocaleTimeString()}`,
    dataset: { testid: `range-${i}` }, style: `left:${xOf(Math.max(r.start, pb.from))};width:calc(${xOf(Math.min(r.end, pb.to))} - ${xOf(Math.max(r.start, pb.from))})`,
  })));
}

const timeAt = (clientX) => {
  const box = $('#timeline').getBoundingClientRect();
  return Math.round(pb.from + ((clientX - box.left) / box.width) * (pb.to - pb.from));
};

// Dragging the cursor inside the recording playing seeks to where it is let go.
let drag = null;
$('#timeline').addEventListener('pointerdown', (e) => {
  if (!pb.session || !pb.range || pb.range.source !== 'device') return;
  drag = { x: e.clientX, moved: false };
  $('#timeline').setPointerCapture(e.pointerId);
});
$('#timeline').addEventListener('pointermove', (e) => {
  if (!drag) return;
  drag.moved ||= Math.abs(e.clientX - drag.x) > 3;
  if (drag.moved) $('#pb-cursor').style.left = xOf(Math.min(Math.max(timeAt(e.clientX), pb.range.start), pb.range.end - 1));
});
$('#timeline').addEventListener('pointerup', (e) => {
  const d = drag;
  drag = null;
  if (!d || !d.moved) return;
  seek(Math.min(Math.max(timeAt(e.clientX), pb.range.start), pb.range.end - 1));
  pb.dragged = true; // the click that follows is this drag's
});

// A click on the timeline: play there, or seek when it is in the range playing.
$('#timeline').addEventListener('click', (e) => {
  if (pb.dragged) { pb.dragged = false; return; }
  const t = timeAt(e.clientX);
  const r = pb.ranges.find((x) => x.start <= t && t < x.end) || pb.ranges.find((x) => Math.abs(x.start - t) < (pb.to - pb.from) / 200);
  if (!r) return;
  const at = Math.max(t, r.start);
  if (pb.session && pb.range === r && r.source === 'device') seek(at);
  else playRange(r, at);
});

function stopPlayback() {
  if (pb.player) { pb.player.destroy(); pb.player = null; }
  if (pb.session) api('DELETE', `/api/sessions/${pb.session.stream_id}`).catch(() => {});
  pb.session = null;
}

async function playRange(r, at) {
  stopPlayback();
  pb.range = r;
  pb.paused = false;
  $('#pb-pause').textContent = 'pause';
  $('#pb-status').textContent = 'starting…';
  try {
    let url;
    if (r.source === 'device') {
      const channel = $('#pb-channel').value;
      const device = devices.find((d) => (channelsOf.get(d.device_id) || []).some((c) => c.device_id === channel));
      pb.session = await api('POST', `/api/devices/${device.device_id}/channels/${channel}/playback`, { start: at, end: r.end });
      url = new URL(pb.session.play.flv, location.href);
      url.host = location.host;
    } else {
      url = new URL(r.flv, location.href);
    }
    pb.player = mpegts.createPlayer({ type: 'flv', isLive: true, url: url.href }, { enableStashBuffer: false });
    pb.player.on(mpegts.Events.ERROR, (type, detail) => { $('#pb-status').textContent = `Playback error: ${type} ${detail}`; });
    pb.player.attachMediaElement($('#pb-video'));
    pb.player.load();
    $('#pb-video').play().catch(() => {});
    $('#pb-status').textContent = `playing from ${new Date(at * 1000).toLocaleTimeString()}`;
    const cursor = $('#pb-cursor');
    cursor.hidden = false;
    cursor.style.left = xOf(at);
  } catch (err) {
    $('#pb-status').textContent = readable(err);
  }
}

async function control(body, done) {
  if (!pb.session) { $('#pb-status').textContent = 'Play a device recording first'; return; }
  try {
    await api('POST', `/api/sessions/${pb.session.stream_id}/control`, body);
    $('#pb-status').textContent = done;
  } catch (err) {
    $('#pb-status').textContent = readable(err);
  }
}

function seek(t) {
  $('#pb-cursor').style.left = xOf(t);
  control({ action: 'seek', position_s: Math.max(0, t - pb.session.start) }, `sought to ${new Date(t * 1000).toLocaleTimeString()}`);
}

$('#pb-pause').addEventListener('click', async () => {
  const pausing = !pb.paused;
  await control({ action: pausing ? 'pause' : 'resume' }, pausing ? 'paused' : 'playing');
  if ($('#pb-status').textContent === (pausing ? 'paused' : 'playing')) {
    pb.paused = pausing;
    $('#pb-pause').textContent = pausing ? 'resume' : 'pause';
  }
});
$('#pb-speed').addEventListener('change', (e) => control({ action: 'speed', scale: Number(e.target.value) }, `speed ${e.target.value}×`));
$('#pb-load').addEventListener('click', loadTimeline);
$('#pb-channel').addEventListener('change', loadTimeline);

$('#pb-download').addEventListener('click', async () => {
  const r = pb.range;
  if (!r || r.source !== 'device') { $('#pb-status').textContent = 'Pick a device recording on the timeline first'; return; }
  const channel = $('#pb-channel').value;
  const device = devices.find((d) => (channelsOf.get(d.device_id) || []).some((c) => c.device_id === channel));
  try {
    const d = await api('POST', `/api/devices/${device.device_id}/channels/${channel}/download`, { start: r.start, end: r.end });
    const bar = el('progress', { max: '1', value: '0' });
    const text = el('span', {}, ' starting');
    $('#downloads').prepend(el('li', { dataset: { testid: `download-${d.id}` } }, `${new Date(r.start * 1000).toLocaleString()} `, bar, text));
    const poll = setInterval(async () => {
      try {
        const now = await api('GET', `/api/downloads/${d.id}`);
        bar.value = now.progress;
        text.textContent = ` ${Math.floor(now.progress * 100)} % ${now.state}`;
        if (now.state === 'complete') {
          text.replaceChildren(' ', el('a', { href: now.url, download: now.file }, 'save the file'));
        }
        if (!['running', 'resuming', 'finishing'].includes(now.state)) clearInterval(poll);
      } catch (err) {
        text.textContent = readable(err);
        clearInterval(poll);
      }
    }, DOWNLOAD_POLL_MS);
  } catch (err) {
    $('#pb-status').textContent = readable(err);
  }
});
