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

// ---- languages (i18n) ----
// Text the console shows comes from a dictionary per language, through `t(key, params)`: the
// string of the language in force (else the English one, else the key itself), its `{name}`
// placeholders filled from `params`. Static text in index.html names its key instead:
// `data-i18n="key"` (the element's text), `data-i18n-placeholder`, `data-i18n-title`, filled by
// `applyI18n()`. Code that builds text calls t() and, to follow a switch, registers its re-render
// with `onLanguage(fn)`. The language is the one chosen with the header's 中文/English switch
// (kept in localStorage), else the browser's (zh* -> zh-CN), else English.
// To translate a view: give each of its strings a key (grouped by view: `up.` is Upstreams, `pk.`
// its channel picker) in every dictionary, then use t() / data-i18n. Values that are data (ids,
// addresses, names, the engine's own words) stay as they are, in <code> or `.data`.
const LANG_STORE = 'gmv-lang';
const LANGUAGES = ['zh-CN', 'en'];
const I18N = {
  en: {
    'nav.upstreams': 'Upstreams',
    'talk.title': 'Talk',
    'talk.hold': 'Hold to talk',
    'talk.all': 'to every camera on the wall',
    'talk.level': 'Microphone level',
    'talk.no_channel': 'Select a tile playing a camera\'s channel first (a bare stream has no speaker).',
    'talk.unsupported': 'This browser cannot send its microphone (no WebRTC or no microphone access; a page served over plain HTTP from another host may not use the microphone: open the console over HTTPS or from localhost).',
    'talk.asking_mic': 'Asking for the microphone…',
    'talk.mic_denied': 'The microphone was not given ({why}): allow it for this site in the browser and try again.',
    'talk.connecting': 'Connecting to {n} camera(s)…',
    'talk.talking': 'Talking: release to stop',
    'talk.refused': 'gmv refused the talk: {why}',
    'talk.failed': 'The connection to gmv failed (its WebRTC port is not reachable from this browser).',
    'talk.ended': 'Talk ended.',
    'talk.target.inviting': 'waiting for the camera to ask for the audio',
    'talk.target.sending': 'the camera is listening',
    'talk.target.ended': 'ended: {why}',
    'up.intro': 'Upper platforms this site reports its cameras to (cascade); refreshed every few seconds.',
    'up.loading': 'Loading…',
    'up.none': 'No upper platform is configured (cascade.upstreams in the config is empty).',
    'up.forbidden': 'This API key may not see the upper platforms: it takes an operator or admin key. Sign out and sign in with one.',
    'up.unauthorized': 'This key is not valid any more: sign out and sign in again.',
    'up.sip_disabled': 'SIP is disabled on this gmv (sip.listen is empty): it reports to no upper platform.',
    'up.unreachable': 'gmv did not answer; trying again. What is shown may be out of date.',
    'up.failed': 'The upper platforms could not be read:',
    'up.updated': 'updated {time}',
    'state.registered': 'registered',
    'state.registering': 'registering',
    'state.retrying': 'retrying',
    'state.unregistered': 'unregistered',
    'state.unknown': 'unknown',
    'up.f.server': 'Upper platform ID',
    'up.f.domain': 'Domain',
    'up.f.address': 'Address',
    'up.f.local_id': 'Our ID there',
    'up.f.since': 'Registered since',
    'up.f.not_registered': 'not registered',
    'up.f.registrations': 'Registrations',
    'up.f.misses': 'Keepalives unanswered',
    'up.f.shared': 'Shared channels',
    'up.f.shared_all': 'all ({n} now)',
    'up.f.shared_n': '{n}',
    'up.f.shared_listed': '{n} known here ({m} listed)',
    'up.f.sessions': 'Sessions sent up',
    'up.f.charset': 'Charset',
    'up.f.source': 'Set in',
    'up.source.config': 'the config file',
    'up.source.api': 'the API (console)',
    'up.s.channel': 'Channel',
    'up.s.kind': 'Kind',
    'up.s.ssrc': 'SSRC',
    'up.s.none': 'Nothing is sent up right now.',
    'kind.live': 'live',
    'kind.playback': 'playback',
    'kind.download': 'download',
    'up.err.title': 'Last error:',
    'up.err.raw': 'The engine said: {raw}',
    'up.err.no_answer': 'The upper platform does not answer REGISTER.',
    'up.hint.no_answer': 'Check its address and port, that it is running, and that no firewall drops SIP (UDP) on the way.',
    'up.err.no_connection': 'gmv cannot open a TCP connection to the upper platform.',
    'up.hint.no_connection': 'Check its address and port, that it listens for SIP over TCP there, and that no firewall blocks the connection.',
    'up.err.refused': 'The upper platform refused the registration ({code}).',
    'up.err.wrong_password': 'The upper platform refused our credentials (a second 401).',
    'up.hint.credentials': 'It does not take our password or our ID: check the password and our ID (local_id) against what the upper platform holds for this site.',
    'up.err.not_found': 'The upper platform does not know us ({code}).',
    'up.hint.not_found': 'Check its ID and domain, and that the upper platform lists our ID.',
    'up.err.upper_failing': 'The upper platform answered with an error ({code}).',
    'up.hint.upper_failing': 'It is failing or overloaded.',
    'up.err.auth_scheme': 'The upper platform asks for an authentication gmv cannot give ({code}).',
    'up.hint.auth_scheme': 'gmv answers MD5 digest only: set the upper platform to MD5.',
    'up.err.keepalives': '{n} keepalives in a row went unanswered.',
    'up.hint.keepalives': 'The upper platform stopped answering (restarted, network cut, or it dropped us); its sessions ended.',
    'up.err.busy': 'gmv had too many SIP transactions in flight.',
    'up.hint.busy': 'A passing overload here.',
    'up.err.other': 'The engine reported:',
    'up.retry_note': 'gmv tries again by itself (after 2 s, doubling up to 60 s).',
    'pk.open': 'Choose shared channels',
    'pk.close': 'Close the picker',
    'pk.title': 'Channels shared with {name}',
    'pk.all': 'Share all channels (also those added later)',
    'pk.filter': 'Filter by ID or name',
    'pk.loading': 'Loading the channels…',
    'pk.asking': 'asking for its channels…',
    'pk.no_devices': 'No device has registered here yet.',
    'pk.load_failed': 'The devices could not be read:',
    'pk.channels_failed': 'its channels could not be read',
    'pk.show_channels': 'show channels',
    'pk.hide_channels': 'hide channels',
    'pk.device_channels': '{n} channels',
    'pk.device_chosen': '{n} of {total} chosen',
    'pk.more': 'More devices than shown: filter to find the others.',
    'pk.count': '{n} channels chosen',
    'pk.count_all': 'All channels, present and future',
    'pk.unknown': '{n} chosen channels are on no device here.',
    'pk.drop_unknown': 'Remove them',
    'pk.unknown_current': 'This gmv does not say what is shared now: saving replaces it with what is chosen here.',
    'pk.save': 'Save',
    'pk.revert': 'Undo changes',
    'pk.dirty': 'Not saved yet.',
    'pk.saving': 'Saving…',
    'pk.saved': 'Saved at {time}.',
    'pk.err.forbidden': 'Not saved: only an admin key may change what is shared (this key is operator or viewer).',
    'pk.err.unauthorized': 'Not saved: this key is not valid any more; sign in again.',
    'pk.err.bad': 'Not saved: gmv refused this list:',
    'pk.err.not_found': 'Not saved: this upper platform is not there any more (removed meanwhile?).',
    'pk.err.unsupported': 'Not saved: this gmv cannot change shared channels from the console (HTTP {status}; too old?).',
    'pk.err.standby': 'Not saved: this control is standby; make the change on the active control.',
    'pk.err.not_saved': 'Applied, but not written to disk: it will not hold after a restart.',
    'pk.err.network': 'Not saved: gmv did not answer.',
    'pk.err.other': 'Not saved (HTTP {status}):',
  },
  'zh-CN': {
    'nav.upstreams': '上级平台',
    'talk.title': '对讲',
    'talk.hold': '按住说话',
    'talk.all': '对墙上所有摄像机喊话',
    'talk.level': '麦克风音量',
    'talk.no_channel': '请先选中一个正在播放设备通道的画面（裸流没有扬声器）。',
    'talk.unsupported': '此浏览器无法发送麦克风声音（不支持 WebRTC 或无法使用麦克风；从其他主机以普通 HTTP 打开的页面不能使用麦克风：请通过 HTTPS 或 localhost 打开控制台）。',
    'talk.asking_mic': '正在请求麦克风…',
    'talk.mic_denied': '未获得麦克风（{why}）：请在浏览器中允许本站使用麦克风后重试。',
    'talk.connecting': '正在连接 {n} 台摄像机…',
    'talk.talking': '正在讲话：松开结束',
    'talk.refused': 'gmv 拒绝了对讲：{why}',
    'talk.failed': '与 gmv 的连接失败（此浏览器访问不到它的 WebRTC 端口）。',
    'talk.ended': '对讲已结束。',
    'talk.target.inviting': '等待摄像机请求音频',
    'talk.target.sending': '摄像机正在收听',
    'talk.target.ended': '已结束：{why}',
    'up.intro': '本平台向以下上级平台上报摄像机（级联），每隔几秒自动刷新。',
    'up.loading': '加载中…',
    'up.none': '尚未配置上级平台（配置文件中的级联上级列表为空）。',
    'up.forbidden': '当前密钥无权查看上级平台：需要“操作员”或“管理员”角色的密钥。请退出后用这样的密钥登录。',
    'up.unauthorized': '当前密钥已失效：请退出后重新登录。',
    'up.sip_disabled': '此 gmv 未启用 SIP，不向任何上级平台上报。',
    'up.unreachable': 'gmv 没有应答，正在重试；显示的内容可能已过时。',
    'up.failed': '无法读取上级平台：',
    'up.updated': '更新于 {time}',
    'state.registered': '已注册',
    'state.registering': '注册中',
    'state.retrying': '重试中',
    'state.unregistered': '已注销',
    'state.unknown': '未知',
    'up.f.server': '上级平台编号',
    'up.f.domain': '域',
    'up.f.address': '地址',
    'up.f.local_id': '本平台编号',
    'up.f.since': '注册时间',
    'up.f.not_registered': '未注册',
    'up.f.registrations': '注册次数',
    'up.f.misses': '心跳未应答',
    'up.f.shared': '共享通道',
    'up.f.shared_all': '全部（当前 {n} 个）',
    'up.f.shared_n': '{n} 个',
    'up.f.shared_listed': '{n} 个（列表中 {m} 个）',
    'up.f.sessions': '上送会话',
    'up.f.charset': '字符集',
    'up.f.source': '配置来源',
    'up.source.config': '配置文件',
    'up.source.api': '接口（控制台）',
    'up.s.channel': '通道',
    'up.s.kind': '类型',
    'up.s.ssrc': 'SSRC',
    'up.s.none': '当前没有向上级发送的媒体。',
    'kind.live': '实时',
    'kind.playback': '回放',
    'kind.download': '下载',
    'up.err.title': '最近错误：',
    'up.err.raw': '引擎原文：{raw}',
    'up.err.no_answer': '上级平台未应答注册请求。',
    'up.hint.no_answer': '请检查上级平台的地址和端口是否正确、平台是否在运行，以及途中的防火墙是否放行 SIP（UDP）。',
    'up.err.no_connection': 'gmv 无法与上级平台建立 TCP 连接。',
    'up.hint.no_connection': '请检查上级平台的地址和端口、该端口是否接受 TCP 方式的 SIP 信令，以及防火墙是否放行该连接。',
    'up.err.refused': '上级平台拒绝了注册（{code}）。',
    'up.err.wrong_password': '上级平台拒绝了本平台的认证（第二次 401）。',
    'up.hint.credentials': '上级平台不接受本平台的密码或编号：请核对密码和本平台编号是否与上级平台为本平台登记的一致。',
    'up.err.not_found': '上级平台不认识本平台（{code}）。',
    'up.hint.not_found': '请核对上级平台编号和域，并确认上级平台已添加本平台的编号。',
    'up.err.upper_failing': '上级平台返回错误（{code}）。',
    'up.hint.upper_failing': '上级平台故障或过载。',
    'up.err.auth_scheme': '上级平台要求 gmv 不支持的认证方式（{code}）。',
    'up.hint.auth_scheme': 'gmv 只支持 MD5 摘要认证：请在上级平台改用 MD5。',
    'up.err.keepalives': '连续 {n} 次心跳未应答。',
    'up.hint.keepalives': '上级平台已不再应答（重启、网络中断或已移除本平台）；发往它的会话已结束。',
    'up.err.busy': 'gmv 同时进行的 SIP 事务过多。',
    'up.hint.busy': '本平台暂时过载。',
    'up.err.other': '引擎报告：',
    'up.retry_note': 'gmv 会自动重试（2 秒后开始，间隔逐次加倍，最长 60 秒）。',
    'pk.open': '选择共享通道',
    'pk.close': '收起',
    'pk.title': '与“{name}”共享的通道',
    'pk.all': '共享全部通道（包括以后新增的）',
    'pk.filter': '按编号或名称筛选',
    'pk.loading': '正在加载通道…',
    'pk.asking': '正在获取通道…',
    'pk.no_devices': '尚无设备注册到本平台。',
    'pk.load_failed': '无法读取设备：',
    'pk.channels_failed': '无法获取通道',
    'pk.show_channels': '展开通道',
    'pk.hide_channels': '收起通道',
    'pk.device_channels': '{n} 个通道',
    'pk.device_chosen': '已选 {n} / {total}',
    'pk.more': '设备多于显示的数量：请筛选以找到其他设备。',
    'pk.count': '已选 {n} 个通道',
    'pk.count_all': '全部通道（含以后新增的）',
    'pk.unknown': '其中 {n} 个已选通道不属于本平台的任何设备。',
    'pk.drop_unknown': '移除它们',
    'pk.unknown_current': '此 gmv 未提供当前的共享列表：保存后将以这里的选择替换。',
    'pk.save': '保存',
    'pk.revert': '撤销更改',
    'pk.dirty': '尚未保存。',
    'pk.saving': '正在保存…',
    'pk.saved': '已保存（{time}）。',
    'pk.err.forbidden': '未保存：只有管理员密钥可以更改共享通道（当前密钥是操作员或查看者）。',
    'pk.err.unauthorized': '未保存：当前密钥已失效，请重新登录。',
    'pk.err.bad': '未保存：gmv 拒绝了该通道列表：',
    'pk.err.not_found': '未保存：该上级平台已不存在（可能刚被删除）。',
    'pk.err.unsupported': '未保存：此 gmv 不支持在控制台更改共享通道（HTTP {status}，版本过旧？）。',
    'pk.err.standby': '未保存：此控制节点处于备用状态，请在主用控制节点上更改。',
    'pk.err.not_saved': '已生效，但未能写入磁盘：重启后将失效。',
    'pk.err.network': '未保存：gmv 没有应答。',
    'pk.err.other': '未保存（HTTP {status}）：',
  },
};

function initialLanguage() {
  let saved = null;
  try { saved = localStorage.getItem(LANG_STORE); } catch (_) { /* storage disabled */ }
  if (LANGUAGES.includes(saved)) return saved;
  return (navigator.language || '').toLowerCase().startsWith('zh') ? 'zh-CN' : 'en';
}
let lang = initialLanguage();
const languageListeners = [];

function t(key, params = {}) {
  const s = (I18N[lang] && I18N[lang][key]) ?? I18N.en[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (all, name) => (name in params ? String(params[name]) : all));
}

// Dates and times as the operator's language writes them (an English choice in a Chinese
// browser still reads English).
function dateLocale() {
  if (lang !== 'en') return lang;
  return (navigator.language || '').toLowerCase().startsWith('en') ? navigator.language : 'en';
}
const timeText = (ms) => new Date(ms).toLocaleTimeString(dateLocale());
const dateText = (ms) => new Date(ms).toLocaleString(dateLocale());

function applyI18n(root = document) {
  for (const e of root.querySelectorAll('[data-i18n]')) e.textContent = t(e.dataset.i18n);
  for (const e of root.querySelectorAll('[data-i18n-placeholder]')) e.placeholder = t(e.dataset.i18nPlaceholder);
  for (const e of root.querySelectorAll('[data-i18n-title]')) e.title = t(e.dataset.i18nTitle);
  for (const b of document.querySelectorAll('[data-lang]')) {
    b.classList.toggle('active', b.dataset.lang === lang);
    b.setAttribute('aria-pressed', String(b.dataset.lang === lang));
  }
  document.documentElement.lang = lang;
}

function onLanguage(fn) { languageListeners.push(fn); }

function setLanguage(next) {
  if (!LANGUAGES.includes(next)) return;
  lang = next;
  try { localStorage.setItem(LANG_STORE, next); } catch (_) { /* kept for this page only */ }
  applyI18n();
  for (const fn of languageListeners) fn();
}
for (const b of document.querySelectorAll('[data-lang]')) b.addEventListener('click', () => setLanguage(b.dataset.lang));
applyI18n();

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
  if (!r.ok) throw new ApiError(r.status, v && (v.code || v.error), v && v.message);
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
  // Refreshed while shown only (its own timer: one request at a time).
  if (view === 'upstreams') startUpstreams();
  else stopUpstreams();
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
    if (t.channel && !t.player) wallPlay(t.device, t.channel, t.label, t, t.level);
  }
}

function stopTile(t) {
  if (t.player) { t.player.destroy(); t.player = null; }
  t.level = null;
  if (t.video) t.video.srcObject = null;
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

// What plays a tile, best first: WebRTC (sub-second, and the sound of G.711 cameras), FLV over
// a WebSocket, HLS. A tile that cannot play one goes on to the next.
const PLAYERS = ['webrtc', 'flv', 'hls'];
const FIRST_PLAYER = { auto: 0, flv: 1, hls: 2 };

async function wallPlay(deviceId, channelId, label, into, level) {
  const t = into || tiles.find((x) => !x.channel) || tiles[Math.max(selected, 0)] || tiles[0];
  stopTile(t);
  t.level = level ?? FIRST_PLAYER[$('#player').value] ?? 0;
  Object.assign(t, { device: deviceId, channel: channelId, label });
  t.name.textContent = label;
  t.message.textContent = 'Connecting…';
  t.node.classList.remove('empty');
  selectTile(t.index);
  $('#device-count').textContent = `${label}: tile ${t.index + 1} of the live wall`;
  const next = () => wallPlay(t.device, t.channel, t.label, t, t.level + 1);
  try {
    // A device's channel is invited; a bare stream (deviceId null) only needs a play token.
    const session = deviceId
      ? await api('POST', `/api/devices/${deviceId}/channels/${channelId}/play`, {})
      : { stream_id: channelId, play: (await api('POST', '/api/play-tokens', { stream_id: channelId })).play };
    if (t.channel !== channelId || t.player) return; // replaced meanwhile
    t.streamId = session.stream_id;
    const player = PLAYERS[t.level];
    if (player === 'webrtc') {
      if (!session.play.whep || !window.RTCPeerConnection) return next();
      await playWebRtc(t, session, next);
    } else if (player === 'hls' || !window.mpegts || !mpegts.isSupported()) {
      // HLS: through hls.js, or natively where the browser plays it (iOS Safari).
      playHls(t, session);
      t.message.textContent = '';
    } else {
      playFlv(t, session, next);
    }
    if (t.player) watchTile(t);
  } catch (err) {
    if (t.channel !== channelId) return; // the tile plays something else meanwhile
    // The WebRTC offer refused (a codec this browser cannot take over WebRTC): the next player.
    if (PLAYERS[t.level] === 'webrtc') return next();
    t.message.textContent = readable(err);
  }
}

// WebRTC (WHEP): the offer to the stream's WHEP URL, the answer back; DELETE when the tile stops.
async function playWebRtc(t, session, next) {
  const pc = new RTCPeerConnection();
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.addTransceiver('audio', { direction: 'recvonly' });
  const media = new MediaStream();
  pc.ontrack = (e) => media.addTrack(e.track);
  let sessionUrl = null;
  t.player = { destroy: () => {
    pc.close();
    if (sessionUrl) fetch(sessionUrl, { method: 'DELETE' }).catch(() => {});
  } };
  const player = t.player;
  await pc.setLocalDescription(await pc.createOffer());
  const url = new URL(session.play.whep, location.href);
  url.host = location.host; // the answer names the host the API was asked at
  const r = await fetch(url.href, { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: pc.localDescription.sdp });
  if (r.status !== 201) {
    pc.close();
    let body = {};
    try { body = await r.json(); } catch { /* not JSON */ }
    throw new ApiError(r.status, body.code || 'webrtc', body.message || `WebRTC refused (${r.status})`);
  }
  sessionUrl = new URL(r.headers.get('Location'), url).href;
  if (t.player !== player) { player.destroy(); return; } // the tile was stopped meanwhile
  await pc.setRemoteDescription({ type: 'answer', sdp: await r.text() });
  // The connection failing (a firewall between the browser and the WebRTC port): the next player.
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === 'failed' && t.player === player) next();
  };
  t.video.srcObject = media;
  t.video.play().catch(() => {});
  t.message.textContent = '';
}

function playFlv(t, session, next) {
  const url = new URL(session.play.flv, location.href);
  url.host = location.host; // the answer names the host the API was asked at
  // Over a WebSocket: a browser opens six HTTP/1.1 connections to one origin, not sixteen.
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  t.player = mpegts.createPlayer({ type: 'flv', isLive: true, url: url.href }, { enableStashBuffer: false, liveBufferLatencyChasing: true });
  t.player.on(mpegts.Events.ERROR, (type, detail) => {
    // FLV failed (a codec MSE refuses, a proxy that drops WebSockets): HLS once.
    if (window.Hls && Hls.isSupported()) {
      next();
      return;
    }
    t.message.textContent = `Playback error: ${type} ${detail}`;
  });
  t.player.attachMediaElement(t.video);
  t.player.load();
  t.video.play().catch(() => {});
  t.message.textContent = '';
}

// The tile's figures every few seconds: the stream's from the API, the frames drawn here.
function watchTile(t) {
  let frames = 0;
  t.timer = setInterval(async () => {
    const q = t.video.getVideoPlaybackQuality ? t.video.getVideoPlaybackQuality() : { totalVideoFrames: 0 };
    const fps = Math.round((q.totalVideoFrames - frames) * 1000 / STATS_INTERVAL_MS);
    frames = q.totalVideoFrames;
    try {
      const s = await api('GET', `/api/streams/${t.streamId}`);
      t.stats.textContent = `${PLAYERS[t.level]} · ${s.video_codec || '?'} ${s.width || '?'}×${s.height || '?'} · ${s.bitrate_kbps} kbit/s · ${fps} fps · lost ${s.lost}`;
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

// ---- talk (对讲): hold to talk into the selected tile's camera, or every camera on the wall ----
// The microphone goes over WebRTC (WHIP) to /whip/broadcast/...: gmv opens a talk stream and a
// voice broadcast from it to each camera. Releasing DELETEs the session (the cameras get their
// BYE). While it lasts, each camera's state comes from /api/broadcasts, so a camera that never
// asks for the audio says why on screen.
const TALK_TARGETS_POLL_MS = 1000;
let talk = null;

function talkStatus(key, params = {}, error = false) {
  const s = $('#talk-status');
  s.textContent = key ? t(key, params) : '';
  s.classList.toggle('error', error);
}

function talkTargets() {
  const all = $('#talk-all').checked ? tiles : [tiles[selected]];
  const seen = new Set();
  return all.filter((x) => x && x.device && x.channel && !seen.has(`${x.device}:${x.channel}`) && seen.add(`${x.device}:${x.channel}`));
}

async function talkStart() {
  if (talk) return;
  const targets = talkTargets();
  if (!targets.length) { talkStatus('talk.no_channel', {}, true); return; }
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia || !window.RTCPeerConnection) { talkStatus('talk.unsupported', {}, true); return; }
  const me = { wanted: true, pc: null, mic: null, ctx: null, session: null, timer: null, since: Date.now(), targets };
  talk = me;
  $('#talk-button').classList.add('on');
  talkStatus('talk.asking_mic');
  try {
    me.mic = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true } });
  } catch (err) {
    talkStatus('talk.mic_denied', { why: err.name || String(err) }, true);
    talkEnd(me, false);
    return;
  }
  if (!me.wanted) { talkEnd(me); return; }
  talkMeter(me);
  me.pc = new RTCPeerConnection();
  me.pc.addTransceiver(me.mic.getAudioTracks()[0], { direction: 'sendonly' });
  await me.pc.setLocalDescription(await me.pc.createOffer());
  const path = targets.length === 1
    ? `/whip/broadcast/${targets[0].device}/${targets[0].channel}`
    : `/whip/broadcast?channels=${targets.map((x) => `${x.device}:${x.channel}`).join(',')}`;
  talkStatus('talk.connecting', { n: targets.length });
  let r;
  try {
    r = await fetch(path, { method: 'POST', headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${apiKey}` }, body: me.pc.localDescription.sdp });
  } catch (err) {
    talkStatus('talk.refused', { why: String(err) }, true);
    talkEnd(me, false);
    return;
  }
  if (r.status !== 201) {
    let body = {};
    try { body = await r.json(); } catch { /* not JSON */ }
    talkStatus('talk.refused', { why: body.message || r.status }, true);
    talkEnd(me, false);
    return;
  }
  me.session = new URL(r.headers.get('Location'), location.href).href;
  await me.pc.setRemoteDescription({ type: 'answer', sdp: await r.text() });
  me.pc.onconnectionstatechange = () => {
    if (talk !== me) return;
    if (me.pc.connectionState === 'connected') talkStatus('talk.talking');
    if (me.pc.connectionState === 'failed') { talkStatus('talk.failed', {}, true); talkEnd(me, false); }
  };
  me.timer = setInterval(() => talkShowTargets(me), TALK_TARGETS_POLL_MS);
  if (!me.wanted) talkEnd(me);
}

// The microphone's level on the meter while talking.
function talkMeter(me) {
  try {
    me.ctx = new AudioContext();
    const analyser = me.ctx.createAnalyser();
    analyser.fftSize = 1024;
    me.ctx.createMediaStreamSource(me.mic).connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    const draw = () => {
      if (talk !== me) { $('#talk-level').value = 0; return; }
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const x of samples) sum += x * x;
      $('#talk-level').value = Math.min(1, Math.sqrt(sum / samples.length) * 4);
      requestAnimationFrame(draw);
    };
    draw();
  } catch { /* no Web Audio: no meter, the talk goes on */ }
}

// Each camera's part of the talk, as /api/broadcasts tells it (this talk's broadcasts only).
async function talkShowTargets(me) {
  const targets = me.targets;
  try {
    const { broadcasts } = await api('GET', '/api/broadcasts');
    if (talk && talk !== me) return; // a newer talk shows its own
    const ours = (x) => broadcasts.find((b) => b.device_id === x.device && b.channel_id === x.channel && b.source === 'microphone' && b.started_at_ms >= me.since - 1000);
    $('#talk-targets').replaceChildren(...targets.map((x) => {
      const b = ours(x);
      const state = b ? t(`talk.target.${b.state}`, { why: b.why || '' }) : '…';
      return el('li', { class: b && b.state === 'ended' ? 'error' : '', dataset: { testid: `talk-target-${x.channel}` } }, `${x.label || x.channel}: ${state}`);
    }));
  } catch { /* shown again at the next poll */ }
}

// Ends a talk (`said`: "ended" is shown; false keeps the error on screen).
function talkEnd(me, said = true) {
  me.wanted = false;
  if (me.session) fetch(me.session, { method: 'DELETE' }).catch(() => {});
  me.session = null;
  if (me.pc) me.pc.close();
  if (me.mic) for (const track of me.mic.getTracks()) track.stop();
  if (me.ctx) me.ctx.close().catch(() => {});
  if (me.timer) {
    clearInterval(me.timer);
    me.timer = null;
    // The cameras' last word (their BYE's why) shows a moment later.
    for (const n of [1, 3]) setTimeout(() => talkShowTargets(me), n * TALK_TARGETS_POLL_MS);
  }
  if (talk === me) {
    talk = null;
    $('#talk-button').classList.remove('on');
    $('#talk-level').value = 0;
    if (said) talkStatus('talk.ended');
  }
}

function talkStop() {
  if (!talk) return;
  const me = talk;
  me.wanted = false;
  // Still setting up: it ends itself once the setup is done (or fails).
  if (me.session || !me.pc) talkEnd(me);
}

{
  const b = $('#talk-button');
  b.addEventListener('pointerdown', (e) => { e.preventDefault(); talkStart(); });
  b.addEventListener('pointerup', talkStop);
  b.addEventListener('pointerleave', talkStop);
  b.addEventListener('pointercancel', talkStop);
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

// ---- upstreams (级联上级): the upper platforms this site reports to, and what each sees ----

const UPSTREAMS_REFRESH_MS = 3000;
/// Rows (devices and channels) the shared-channels picker draws at most; a filter finds others.
const PICKER_ROWS_MAX = 400;
const UPSTREAM_STATES = ['registered', 'registering', 'retrying', 'unregistered'];

// Refreshed while the view is shown, one request at a time: the next is timed from the end of
// the last. Loads are numbered: one started before a save finished is dropped (it may show
// the old list).
const ups = {
  active: false, busy: false, timer: null, loads: 0, ignoreBefore: 0,
  list: null, error: null, updatedAt: 0,
  cards: new Map(), // id -> {u, node, head, body, actions, openButton, pickerBox, pk}
  pickers: new Map(), // id -> {open, all, chosen: Set, dirty, known, filter, shown, status}
};
// The site's devices and their channels, for the picker (read when a picker opens).
const catalog = { devices: null, channels: new Map(), open: new Map(), error: null, loading: null };

function startUpstreams() {
  ups.active = true;
  if (!ups.list && !ups.error) $('#upstream-list').replaceChildren(el('p', { class: 'muted' }, t('up.loading')));
  refreshUpstreams();
}

function stopUpstreams() {
  ups.active = false;
  clearTimeout(ups.timer);
  ups.timer = null;
}

async function refreshUpstreams() {
  clearTimeout(ups.timer);
  ups.timer = null;
  // One in flight: when it ends it times the next.
  if (!ups.active || ups.busy) return;
  ups.busy = true;
  try {
    await loadUpstreams();
  } finally {
    ups.busy = false;
  }
  if (ups.active && !ups.timer) ups.timer = setTimeout(refreshUpstreams, UPSTREAMS_REFRESH_MS);
}

async function loadUpstreams() {
  const n = ++ups.loads;
  try {
    const v = await api('GET', '/api/upstreams');
    if (n < ups.ignoreBefore) return;
    ups.list = Array.isArray(v && v.upstreams) ? v.upstreams : [];
    ups.error = null;
    ups.updatedAt = Date.now();
  } catch (err) {
    if (n < ups.ignoreBefore) return;
    ups.error = err;
    // Not allowed (or no cascade at all): nothing of an earlier answer stays on screen.
    if (err instanceof ApiError && [401, 403, 503].includes(err.status)) ups.list = null;
  }
  renderUpstreams();
}

// Why the list is not shown (or may be stale), in the operator's words: [text, raw detail].
function upstreamsProblem(err) {
  if (!(err instanceof ApiError)) return [t('up.unreachable'), String(err && err.message || err)];
  if (err.status === 403) return [t('up.forbidden'), ''];
  if (err.status === 401) return [t('up.unauthorized'), ''];
  if (err.code === 'sip_disabled') return [t('up.sip_disabled'), ''];
  return [t('up.failed'), `HTTP ${err.status}${err.message ? ': ' + err.message : ''}`];
}

// What an upstream's `last_error` (the engine's words) means, and what to check:
// {title, hint, raw} (raw: shown as well when the words are not recognised).
function explainUpstreamError(error) {
  const text = String(error);
  let m;
  if ((m = /^no TCP connection to \S+: (.*)$/.exec(text))) return { title: t('up.err.no_connection'), hint: t('up.hint.no_connection'), raw: m[1] };
  if (/^REGISTER not answered/.test(text)) return { title: t('up.err.no_answer'), hint: t('up.hint.no_answer') };
  if (/^401 to our credentials|second 401/i.test(text)) return { title: t('up.err.wrong_password'), hint: t('up.hint.credentials') };
  if ((m = /^REGISTER answered (\d{3})/.exec(text))) {
    const code = Number(m[1]);
    if (code === 401 || code === 403 || code === 407) return { title: t('up.err.refused', { code }), hint: t('up.hint.credentials') };
    if (code === 404) return { title: t('up.err.not_found', { code }), hint: t('up.hint.not_found') };
    return { title: t('up.err.upper_failing', { code }), hint: t('up.hint.upper_failing') };
  }
  if ((m = /^(\d{3}) without a digest challenge/.exec(text))) return { title: t('up.err.auth_scheme', { code: m[1] }), hint: t('up.hint.auth_scheme') };
  if ((m = /^(\d+) keepalives? unanswered/.exec(text))) return { title: t('up.err.keepalives', { n: m[1] }), hint: t('up.hint.keepalives') };
  if (/too many transactions/.test(text)) return { title: t('up.err.busy'), hint: t('up.hint.busy') };
  return { title: t('up.err.other'), hint: '', raw: text };
}

function renderUpstreams() {
  const note = $('#upstreams-note');
  let text = '';
  let raw = '';
  if (ups.error) [text, raw] = upstreamsProblem(ups.error);
  else if (ups.list && !ups.list.length) text = t('up.none');
  note.hidden = !text;
  note.className = ups.error ? 'notice error' : 'notice';
  note.replaceChildren(text, ...(raw ? [' ', el('code', {}, raw)] : []));
  $('#upstreams-updated').textContent = ups.updatedAt && ups.list ? t('up.updated', { time: timeText(ups.updatedAt) }) : '';
  const list = ups.list || [];
  const seen = new Set();
  const nodes = list.map((u) => {
    seen.add(u.id);
    const c = cardOf(u);
    fillCard(c);
    return c.node;
  });
  for (const id of [...ups.cards.keys()]) {
    if (!seen.has(id)) { ups.cards.delete(id); ups.pickers.delete(id); }
  }
  const box = $('#upstream-list');
  // Cards are kept (an open picker keeps its focus and scroll); only a change of order moves them.
  if (nodes.length !== box.children.length || nodes.some((n, i) => box.children[i] !== n)) box.replaceChildren(...nodes);
}

function cardOf(u) {
  let c = ups.cards.get(u.id);
  if (!c) {
    c = { head: el('h3'), body: el('div', { class: 'upstream-body' }), pickerBox: el('div', { class: 'picker', hidden: '', dataset: { testid: `picker-${u.id}` } }) };
    c.openButton = el('button', { type: 'button', dataset: { testid: `pick-open-${u.id}` }, onclick: () => togglePicker(c) });
    c.actions = el('div', { class: 'actions' }, c.openButton);
    c.node = el('section', { class: 'upstream', dataset: { testid: `upstream-${u.id}` } }, c.head, c.body, c.actions, c.pickerBox);
    ups.cards.set(u.id, c);
  }
  c.u = u;
  return c;
}

const codeEl = (v) => el('code', {}, v === undefined || v === null || v === '' ? '—' : String(v));

function sharedText(u) {
  const n = u.shared_channels ?? 0;
  if (u.shared === 'all') return t('up.f.shared_all', { n });
  if (Array.isArray(u.shared) && u.shared.length !== n) return t('up.f.shared_listed', { n, m: u.shared.length });
  return t('up.f.shared_n', { n });
}

function fillCard(c) {
  const u = c.u;
  const state = UPSTREAM_STATES.includes(u.state) ? u.state : 'unknown';
  c.head.replaceChildren(
    el('span', { class: 'data name' }, u.name || u.id),
    ...(u.name && u.name !== u.id ? [el('code', {}, u.id)] : []),
    el('span', { class: `badge ${state}`, dataset: { testid: `upstream-state-${u.id}` } }, t(`state.${state}`)));
  const row = (key, value, testid) => [el('dt', {}, t(key)), el('dd', testid ? { dataset: { testid } } : {}, value)];
  const sourceKey = `up.source.${u.source}`;
  const fields = [
    row('up.f.server', codeEl(u.server_id)),
    u.domain ? row('up.f.domain', codeEl(u.domain)) : [],
    row('up.f.address', codeEl(u.transport ? `${u.address} (${String(u.transport).toUpperCase()})` : u.address), `upstream-address-${u.id}`),
    row('up.f.local_id', codeEl(u.local_id)),
    row('up.f.since', u.registered_at_ms ? dateText(u.registered_at_ms) : t('up.f.not_registered'), `upstream-since-${u.id}`),
    row('up.f.registrations', String(u.registrations ?? '—'), `upstream-registrations-${u.id}`),
    row('up.f.misses', String(u.keepalive_misses ?? 0)),
    row('up.f.shared', sharedText(u), `upstream-shared-${u.id}`),
    row('up.f.sessions', String(u.sessions ?? (u.session_list || []).length), `upstream-sessions-${u.id}`),
    u.charset ? row('up.f.charset', codeEl(u.charset)) : [],
    u.source ? row('up.f.source', sourceKey in I18N.en ? t(sourceKey) : codeEl(u.source)) : [],
  ].flat();
  const parts = [el('dl', {}, ...fields)];
  if (u.last_error) {
    const x = explainUpstreamError(u.last_error);
    parts.push(el('div', { class: 'problem', dataset: { testid: `upstream-error-${u.id}` }, title: t('up.err.raw', { raw: u.last_error }), 'data-raw': '' },
      el('div', {}, el('strong', {}, t('up.err.title')), ' ', x.title, ...(x.raw ? [' ', el('code', {}, x.raw)] : [])),
      ...(x.hint ? [el('div', { class: 'problem-hint' }, x.hint)] : []),
      ...(state === 'retrying' ? [el('div', { class: 'muted' }, t('up.retry_note'))] : [])));
  }
  if (Array.isArray(u.session_list)) {
    parts.push(u.session_list.length
      ? el('div', { class: 'table-scroll' }, el('table', { class: 'sessions', dataset: { testid: `upstream-session-list-${u.id}` } },
        el('thead', {}, el('tr', {}, el('th', {}, t('up.s.channel')), el('th', {}, t('up.s.kind')), el('th', {}, t('up.s.ssrc')))),
        el('tbody', {}, ...u.session_list.map((s) => el('tr', { dataset: { testid: `upstream-session-${u.id}-${s.channel_id}` } },
          el('td', {}, codeEl(s.channel_id)),
          el('td', {}, `kind.${s.kind}` in I18N.en ? t(`kind.${s.kind}`) : codeEl(s.kind)),
          el('td', {}, codeEl(Number.isFinite(s.ssrc) ? String(s.ssrc).padStart(10, '0') : s.ssrc)))))))
      : el('p', { class: 'muted' }, t('up.s.none')));
  }
  c.body.replaceChildren(...parts);
  const p = pickerOf(u);
  c.openButton.textContent = p.open ? t('pk.close') : t('pk.open');
  c.openButton.setAttribute('aria-expanded', String(p.open));
  // An open picker follows a change made elsewhere, unless the operator is editing it.
  const shown = JSON.stringify(u.shared ?? null);
  if (p.open && !p.dirty && p.shown !== shown) renderPicker(c);
}

function pickerOf(u) {
  let p = ups.pickers.get(u.id);
  if (!p) {
    p = { open: false, dirty: false, filter: '', status: null };
    ups.pickers.set(u.id, p);
  }
  if (!p.dirty) {
    p.known = u.shared !== undefined;
    p.all = u.shared === 'all';
    p.chosen = new Set(Array.isArray(u.shared) ? u.shared : []);
  }
  return p;
}

function togglePicker(c) {
  const p = pickerOf(c.u);
  p.open = !p.open;
  c.openButton.textContent = p.open ? t('pk.close') : t('pk.open');
  c.openButton.setAttribute('aria-expanded', String(p.open));
  if (p.open) loadCatalog();
  renderPicker(c);
}

async function pagedList(path, field) {
  const found = [];
  let total = Infinity;
  const sep = path.includes('?') ? '&' : '?';
  while (found.length < Math.min(total, DEVICES_FETCH_MAX)) {
    const page = await api('GET', `${path}${sep}offset=${found.length}&limit=${PAGE}`);
    const items = (page && page[field]) || [];
    total = page && page.total !== undefined ? page.total : found.length + items.length;
    found.push(...items);
    if (!items.length) break;
  }
  return found;
}

// Every device (in pages, as the tree reads them); the channels of a small site at once, of a
// big one when a device is opened.
function loadCatalog() {
  if (catalog.loading) return catalog.loading;
  catalog.loading = (async () => {
    try {
      catalog.devices = await pagedList('/api/devices', 'devices');
      catalog.error = null;
      renderOpenPickers();
      const small = catalog.devices.length <= AUTO_EXPAND_MAX;
      await Promise.all(catalog.devices.filter((d) => small || Array.isArray(catalog.channels.get(d.device_id))).map((d) => loadDeviceChannels(d.device_id)));
    } catch (err) {
      catalog.error = err;
    } finally {
      catalog.loading = null;
    }
    renderOpenPickers();
  })();
  return catalog.loading;
}

async function loadDeviceChannels(id) {
  if (!catalog.channels.has(id)) catalog.channels.set(id, null); // asking (an earlier list stays shown)
  try {
    catalog.channels.set(id, await pagedList(`/api/devices/${encodeURIComponent(id)}/channels`, 'channels'));
  } catch (err) {
    catalog.channels.set(id, err instanceof Error ? err : new Error(String(err)));
  }
}

function renderOpenPickers() {
  for (const c of ups.cards.values()) {
    const p = ups.pickers.get(c.u.id);
    if (p && p.open && c.pk) { renderPickerList(c); renderPickerFooter(c); }
  }
}

// The picker's frame: the "all" switch, a filter, the list, the count, save and undo.
function renderPicker(c) {
  const u = c.u;
  const p = pickerOf(u);
  c.pickerBox.hidden = !p.open;
  if (!p.open) { c.pickerBox.replaceChildren(); c.pk = null; return; }
  p.shown = JSON.stringify(u.shared ?? null);
  const all = el('input', { type: 'checkbox', dataset: { testid: `pick-all-${u.id}` } });
  all.checked = p.all;
  all.addEventListener('change', () => { p.all = all.checked; edited(c); });
  const filter = el('input', { type: 'search', placeholder: t('pk.filter'), 'aria-label': t('pk.filter'), dataset: { testid: `pick-filter-${u.id}` } });
  filter.value = p.filter;
  filter.addEventListener('input', () => { p.filter = filter.value; renderPickerList(c); });
  c.pk = {
    list: el('div', { class: 'picker-list', dataset: { testid: `pick-list-${u.id}` } }),
    count: el('span', { class: 'count', dataset: { testid: `pick-count-${u.id}` } }),
    status: el('div', { class: 'status', role: 'status', dataset: { testid: `pick-status-${u.id}` } }),
    save: el('button', { type: 'button', class: 'primary', dataset: { testid: `pick-save-${u.id}` }, onclick: () => saveShared(c) }, t('pk.save')),
    revert: el('button', { type: 'button', dataset: { testid: `pick-revert-${u.id}` }, onclick: () => { p.dirty = false; p.status = null; renderPicker(c); } }, t('pk.revert')),
  };
  c.pickerBox.replaceChildren(
    el('h4', {}, ...titleParts(u)),
    el('label', { class: 'switch' }, all, t('pk.all')),
    el('div', { class: 'toolbar' }, filter),
    c.pk.list,
    el('div', { class: 'picker-foot' }, c.pk.count, el('span', { class: 'buttons' }, c.pk.revert, c.pk.save)),
    c.pk.status);
  renderPickerList(c);
  renderPickerFooter(c);
}

// "Channels shared with {name}", the name set apart as data.
function titleParts(u) {
  const [before, after] = t('pk.title').split('{name}');
  return [before || '', el('span', { class: 'data' }, u.name || u.id), after || ''];
}

function edited(c) {
  const p = ups.pickers.get(c.u.id);
  p.dirty = true;
  p.status = null;
  renderPickerList(c);
  renderPickerFooter(c);
}

function renderPickerList(c) {
  const u = c.u;
  const p = ups.pickers.get(u.id);
  const list = c.pk.list;
  list.classList.toggle('disabled', p.all);
  if (catalog.error) {
    list.replaceChildren(el('p', { class: 'error' }, t('pk.load_failed'), ' ', codeEl(readable(catalog.error))));
    return;
  }
  if (!catalog.devices) { list.replaceChildren(el('p', { class: 'muted' }, t('pk.loading'))); return; }
  if (!catalog.devices.length) { list.replaceChildren(el('p', { class: 'muted' }, t('pk.no_devices'))); return; }
  const q = p.filter.trim().toLowerCase();
  const match = (s) => !q || String(s || '').toLowerCase().includes(q);
  const rows = [];
  for (const d of catalog.devices) {
    if (rows.length >= PICKER_ROWS_MAX) { rows.push(el('p', { class: 'muted' }, t('pk.more'))); break; }
    const channels = catalog.channels.get(d.device_id);
    const loaded = Array.isArray(channels);
    const deviceMatches = match(d.device_id) || match(d.info && d.info.device_name);
    const shown = loaded ? channels.filter((ch) => deviceMatches || match(ch.device_id) || match(ch.name)) : [];
    if (q && !deviceMatches && !shown.length) continue;
    const open = catalog.open.get(d.device_id) ?? (catalog.devices.length <= AUTO_EXPAND_MAX || (q !== '' && shown.length > 0));
    rows.push(pickerDeviceRow(c, d, channels, open));
    if (!open) continue;
    if (channels === undefined) {
      loadDeviceChannels(d.device_id).then(renderOpenPickers);
      rows.push(el('p', { class: 'muted pick-note' }, t('pk.asking')));
    } else if (channels === null) {
      rows.push(el('p', { class: 'muted pick-note' }, t('pk.asking')));
    } else if (!loaded) {
      rows.push(el('p', { class: 'error pick-note' }, t('pk.channels_failed'), ' ', codeEl(readable(channels))));
    } else {
      for (const ch of shown.slice(0, PICKER_ROWS_MAX)) rows.push(pickerChannelRow(c, ch));
    }
  }
  list.replaceChildren(...rows);
}

function pickerDeviceRow(c, d, channels, open) {
  const p = ups.pickers.get(c.u.id);
  const loaded = Array.isArray(channels);
  const n = loaded ? channels.filter((ch) => p.chosen.has(ch.device_id)).length : 0;
  const box = el('input', { type: 'checkbox', dataset: { testid: `pick-device-${c.u.id}-${d.device_id}` } });
  box.checked = p.all || (loaded && channels.length > 0 && n === channels.length);
  box.indeterminate = !p.all && n > 0 && loaded && n < channels.length;
  box.disabled = p.all;
  box.addEventListener('change', async () => {
    const on = box.checked;
    if (!Array.isArray(catalog.channels.get(d.device_id))) await loadDeviceChannels(d.device_id);
    const list = catalog.channels.get(d.device_id);
    if (Array.isArray(list)) for (const ch of list) { if (on) p.chosen.add(ch.device_id); else p.chosen.delete(ch.device_id); }
    edited(c);
  });
  const name = d.info && d.info.device_name && d.info.device_name !== d.device_id ? d.info.device_name : '';
  return el('div', { class: 'pick-device' },
    el('button', { type: 'button', class: 'toggle', title: open ? t('pk.hide_channels') : t('pk.show_channels'), 'aria-label': open ? t('pk.hide_channels') : t('pk.show_channels'), onclick: () => {
      catalog.open.set(d.device_id, !open);
      renderPickerList(c);
    } }, open ? '▾' : '▸'),
    el('label', {}, box, el('span', { class: `dot ${d.online ? 'on' : ''}` }),
      el('span', { class: 'pick-text' }, ...(name ? [el('span', { class: 'data' }, name)] : []), codeEl(d.device_id))),
    el('span', { class: 'muted' }, loaded ? t('pk.device_chosen', { n: p.all ? channels.length : n, total: channels.length }) : t('pk.device_channels', { n: d.channel_count ?? '?' })));
}

function pickerChannelRow(c, ch) {
  const p = ups.pickers.get(c.u.id);
  const box = el('input', { type: 'checkbox', dataset: { testid: `pick-${c.u.id}-${ch.device_id}` } });
  box.checked = p.all || p.chosen.has(ch.device_id);
  box.disabled = p.all;
  box.addEventListener('change', () => {
    if (box.checked) p.chosen.add(ch.device_id); else p.chosen.delete(ch.device_id);
    edited(c);
  });
  return el('label', { class: 'pick-channel' }, box, el('span', { class: `dot ${ch.status === 'ON' ? 'on' : ''}` }),
    el('span', { class: 'pick-text' }, ...(ch.name ? [el('span', { class: 'data' }, ch.name)] : []), codeEl(ch.device_id)));
}

function renderPickerFooter(c) {
  const p = ups.pickers.get(c.u.id);
  const { count, status } = c.pk;
  const parts = [p.all ? t('pk.count_all') : t('pk.count', { n: p.chosen.size })];
  // Chosen ids on no device listed (once every device's channels are in): say so, offer to drop them.
  const lists = catalog.devices ? catalog.devices.map((d) => catalog.channels.get(d.device_id)) : [];
  if (!p.all && catalog.devices && lists.every(Array.isArray)) {
    const known = new Set(lists.flat().map((ch) => ch.device_id));
    const unknown = [...p.chosen].filter((id) => !known.has(id));
    if (unknown.length) {
      parts.push(' · ', t('pk.unknown', { n: unknown.length }), ' ', el('button', { type: 'button', class: 'link', onclick: () => {
        for (const id of unknown) p.chosen.delete(id);
        edited(c);
      } }, t('pk.drop_unknown')));
    }
  }
  count.replaceChildren(...parts);
  const s = p.status;
  status.className = `status ${s ? s.cls : ''}`;
  // A time is written when shown, in the language in force then.
  if (s) status.replaceChildren(t(s.key, s.at ? { time: timeText(s.at) } : s.params || {}), ...(s.raw ? [' ', codeEl(s.raw)] : []));
  else if (p.dirty) status.replaceChildren(t('pk.dirty'));
  else if (!p.known) status.replaceChildren(t('pk.unknown_current'));
  else status.replaceChildren();
  c.pk.revert.disabled = !p.dirty;
}

// Why a save failed, in the operator's words ({cls, key, params, raw}: raw is gmv's own).
function saveProblem(err) {
  if (!(err instanceof ApiError)) return { cls: 'error', key: 'pk.err.network', raw: String(err && err.message || err) };
  const raw = err.message || '';
  switch (err.status) {
    case 400: return { cls: 'error', key: 'pk.err.bad', raw };
    case 401: return { cls: 'error', key: 'pk.err.unauthorized' };
    case 403: return { cls: 'error', key: 'pk.err.forbidden' };
    case 404: return err.code === 'not_found' && /upstream/.test(raw)
      ? { cls: 'error', key: 'pk.err.not_found' }
      : { cls: 'error', key: 'pk.err.unsupported', params: { status: 404 } };
    case 405: return { cls: 'error', key: 'pk.err.unsupported', params: { status: 405 } };
    default:
      if (err.code === 'standby') return { cls: 'error', key: 'pk.err.standby' };
      if (err.code === 'not_saved') return { cls: 'error', key: 'pk.err.not_saved', raw };
      return { cls: 'error', key: 'pk.err.other', params: { status: err.status }, raw };
  }
}

async function saveShared(c) {
  const id = c.u.id;
  const p = ups.pickers.get(id);
  const shared = p.all ? 'all' : [...p.chosen].sort();
  p.status = { cls: 'muted', key: 'pk.saving' };
  c.pk.save.disabled = true;
  renderPickerFooter(c);
  try {
    const v = await api('PUT', `/api/upstreams/${encodeURIComponent(id)}/shared`, { shared });
    ups.ignoreBefore = ups.loads + 1;
    p.dirty = false;
    p.status = { cls: 'ok', key: 'pk.saved', at: Date.now() };
    // The answer is the upstream as it is now.
    if (v && v.id === id && ups.list) {
      ups.list = ups.list.map((u) => (u.id === id ? { ...u, ...v } : u));
      renderUpstreams();
    }
    const card = ups.cards.get(id);
    if (card) renderPicker(card);
    refreshUpstreams();
  } catch (err) {
    p.status = saveProblem(err);
    if (err instanceof ApiError && err.status === 404) refreshUpstreams();
  } finally {
    const card = ups.cards.get(id);
    if (card && card.pk) { card.pk.save.disabled = false; renderPickerFooter(card); }
  }
}

onLanguage(() => {
  renderUpstreams();
  for (const c of ups.cards.values()) renderPicker(c);
});

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
