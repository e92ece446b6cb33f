// The gmv console: plain JS over the REST API. People sign in with a user name and password
// (an HTTP-only session cookie, a CSRF token on every change); an API key (machines, the first
// set-up) lives in this tab's session storage and goes in a header. Players get play tokens
// from the API, never the key.
'use strict';

const KEY_STORE = 'gmv-api-key';
const EVENTS_SHOWN_MAX = 500;
const STATS_INTERVAL_MS = 2000;
// A stream that has taken no packet for this long shows why on its tile.
const NO_MEDIA_SHOWN_AFTER_MS = 3000;
let apiKey = '';
try { apiKey = sessionStorage.getItem(KEY_STORE) || ''; } catch (_) { /* storage disabled */ }

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
// `applyI18n()` (elements built in code may carry them too). Code that builds text calls t() and,
// to follow a switch, either sets it with `say(e, fn)` / `sayKey(e, key, params)` (said again at
// each switch) or registers its re-render with `onLanguage(fn)`. The language is the one chosen
// with the 中文/English switch (header and sign-in; kept in localStorage), else the browser's
// (zh* -> zh-CN), else English.
// To translate a view: give each of its strings a key (grouped by view: `signin.`, `nav.`,
// `dev.` Devices, `wall.` Live wall, `ptz.` PTZ and presets, `talk.`, `pb.` Playback, `st.`
// Streams, `nodes.`, `ev.` Events, `up.` Upstreams, `pk.` its channel picker, `err.CODE` the
// API's error codes, `common.`) in every dictionary, then use t() / data-i18n. Values that are
// data (ids, addresses, names, the engine's own words) stay as they are, in <code> or `.data`.
// English strings the browser tests read (tests/browser/*.mjs, tests/*.rs) stay as they are.
const LANG_STORE = 'gmv-lang';
const LANGUAGES = ['zh-CN', 'en'];
const I18N = {
  en: {
    'app.title': 'gmv console',
    'signin.intro': 'Sign in with an API key (the engine\'s log says where the admin key is).',
    'signin.key': 'API key',
    'signin.button': 'Sign in',
    'signin.bad_key': 'That key is not valid.',
    'nav.devices': 'Devices',
    'nav.wall': 'Live wall',
    'nav.playback': 'Playback',
    'nav.streams': 'Streams',
    'nav.events': 'Events',
    'nav.nodes': 'Nodes',
    'nav.signout': 'Sign out',
    'common.field': '{name}: ',
    'common.list_sep': ', ',
    'common.sentence_sep': ' ',
    'common.play_in_wall': 'Play in the wall',
    'err.detail': '{what}: {detail}',
    'err.status': 'Error {status}',
    'err.network': 'gmv did not answer',
    'err.unauthorized': 'Not signed in (or the key was revoked)',
    'err.forbidden': 'No permission for this (your key\'s role is too low)',
    'err.not_found': 'Not found',
    'err.device_offline': 'Device offline',
    'err.device_timeout': 'The device did not answer',
    'err.device_rejected': 'The device refused',
    'err.device_error': 'The device reported an error',
    'err.busy': 'Too busy, try again',
    'err.standby': 'This control is standby',
    'err.sip_disabled': 'SIP is disabled on this gmv',
    'err.bad_request': 'The request was refused as invalid',
    'err.too_many_viewers': 'Too many viewers of this stream',
    'err.webrtc': 'WebRTC refused (HTTP {status})',
    'err.webrtc_off': 'WebRTC is off on this gmv',
    'err.bad_offer': 'The browser\'s WebRTC offer cannot be used',
    'err.no_codec': 'No codec this browser and gmv share over WebRTC',
    'err.not_talk': 'This stream does not take a microphone',
    'err.on_media_node': 'The channel plays on a media node',
    'err.offer_size': 'The WebRTC offer is too large',
    'err.no_stream': 'The stream could not be opened',
    'err.broadcast_failed': 'The voice broadcast failed',
    'err.cancelled': 'Cancelled',
    'err.no_port': 'No free media port',
    'err.media_connect_failed': 'The media connection failed',
    'err.not_playback': 'Not a playback session',
    'err.exists': 'It exists already',
    'err.full': 'The limit is reached',
    'err.not_saved': 'Changed, but not saved',
    'err.not_control': 'This gmv places no streams on media nodes',
    'err.method_not_allowed': 'Not allowed here',
    'err.internal': 'Internal error',
    'err.timeout': 'Timed out',
    'err.overloaded': 'gmv is overloaded',
    'err.no_snapshot': 'No snapshot',
    'err.no_cover': 'No cover picture',
    'err.not_ready': 'Not ready yet, try again',
    'err.unsupported': 'Not supported',
    'err.unsupported_media_type': 'Content type not supported',
    'err.bad_audio': 'The audio cannot be used',
    'err.origin_not_allowed': 'This page\'s origin is not allowed',
    'err.body_too_large': 'The request is too large',
    'err.head_too_large': 'The request is too large',
    'dev.filter': 'Search devices and channels',
    'dev.online_only': 'online only',
    'dev.count': '{n} of {total} devices',
    'dev.asking_channels': 'asking for channels…',
    'dev.show_channels': 'show channels',
    'dev.hide_channels': 'hide channels',
    'dev.details': 'details',
    'dev.online': 'online',
    'dev.offline': 'offline',
    'dev.channels': '{n} channels',
    'dev.sync': 'sync',
    'dev.sync_title': 'Ask the device for its catalog again',
    'dev.f.name': 'name',
    'dev.f.manufacturer': 'manufacturer',
    'dev.f.model': 'model',
    'dev.f.firmware': 'firmware',
    'dev.f.address': 'address',
    'dev.f.gb': 'GB/T 28181',
    'dev.f.status': 'status',
    'dev.f.subscriptions': 'subscriptions',
    'dev.f.position': 'position',
    'dev.f.last_error': 'last error',
    'dev.gb_ver': 'X-GB-Ver {v}',
    'dev.gb_2016': '2016 (no X-GB-Ver)',
    'dev.status': '{online} · {status} · encode {encode} · record {record} · clock {clock}',
    'dev.sub.catalog': 'catalog',
    'dev.sub.alarm': 'alarm',
    'dev.sub.mobile_position': 'mobile_position',
    'dev.sub.inactive': '{kind} (not active)',
    'dev.position': '{lat}, {lon} at {time}',
    'dev.ask_status': 'ask status',
    'dev.asking': 'asking…',
    'wall.tiles': 'Tiles',
    'wall.player': 'Player',
    'wall.player.auto': 'WebRTC (with sound), then FLV, then HLS',
    'wall.player.flv': 'FLV (WebSocket), HLS if it fails',
    'wall.player.hls': 'HLS',
    'wall.hint': 'Click a channel to play it in the selected tile, or drag it onto a tile.',
    'wall.channels': 'Channels',
    'wall.channels_title': 'Show or hide the device tree',
    'wall.channels_close': 'Close the list',
    'wall.tree_hint': 'Click: play in the selected tile. Drag: play in the tile it is dropped on.',
    'wall.empty': 'empty',
    'wall.sound': 'sound',
    'wall.mute': 'mute',
    'wall.sound_title': 'Sound on/off',
    'wall.snap': 'snap',
    'wall.snap_title': 'Snapshot',
    'wall.full': 'full',
    'wall.full_title': 'Full screen',
    'wall.close_title': 'Close',
    'wall.connecting': 'Connecting…',
    'wall.playing_in': '{label}: tile {n} of the live wall',
    'wall.stream_label': 'stream {id}',
    'wall.playback_error': 'Playback error: {type} {detail}',
    'wall.stats': '{player} · {codec} {width}×{height} · {kbps} kbit/s · {fps} fps · lost {lost}',
    'wall.no_media': 'No video yet: {why}',
    'wall.closed_no_media': 'Closed without video: {why}',
    'wall.no_player': 'This browser plays neither FLV (Media Source Extensions) nor HLS',
    'wall.ended': 'The stream ended: gmv closed its connection (code {code}).',
    'wall.flv_refused': 'The stream did not open over a WebSocket (closed with code {code}).',
    'wall.flv_too_big': 'Stopped: the stream sent more than {mib} MiB without a whole FLV tag.',
    'wall.flv_bad': 'Stopped: the stream is not FLV ({why}).',
    'wall.wasm_codec': 'Stopped: the stream now sends {codec}; the console\'s own decoder plays H.265 only.',
    'wall.hevc_unplayable': 'H.265 cannot play here: this browser has no H.265 decoder and the console\'s own did not load ({why}).',
    'wall.hevc_format': 'H.265 cannot play here: the console\'s decoder does not draw this picture ({why}).',
    'wall.hevc_undecodable': 'H.265 cannot play here: the console\'s decoder refuses this stream (FFmpeg error {code}).',
    'wall.hevc_no_wasm': 'this browser runs no WebAssembly Workers',
    'wall.hevc_worker_failed': 'its Worker script failed',
    'wall.hevc_load_slow': 'not ready within {s} s',
    'wall.no_sound': 'no sound: {why}',
    'wall.no_sound.flv_g711': 'the FLV player cannot play G.711 (the WebRTC player can)',
    'wall.no_sound.hls_g711': 'HLS carries no G.711 (the WebRTC player plays it)',
    'wall.no_sound.codec': '{codec} sound does not go over WebRTC',
    'wall.no_sound.no_webrtc': 'this browser has no WebRTC',
    'wall.no_sound.failed': 'the WebRTC connection failed',
    'ptz.title': 'PTZ',
    'ptz.select_tile': '(select a tile)',
    'ptz.up': 'Tilt up',
    'ptz.down': 'Tilt down',
    'ptz.left': 'Pan left',
    'ptz.right': 'Pan right',
    'ptz.zoom_in': 'zoom +',
    'ptz.zoom_out': 'zoom −',
    'ptz.presets': 'Presets',
    'ptz.preset_number': 'n',
    'ptz.preset_save': 'save here',
    'ptz.preset_save_title': 'Save where the camera points now as preset n (1..255)',
    'ptz.go': 'go',
    'ptz.go_title': 'Go to this preset',
    'ptz.delete': 'delete',
    'ptz.asking': 'asking…',
    'ptz.no_presets': 'no presets',
    'ptz.need_preset': 'Select a device tile and a preset number 1..255',
    'ptz.need_tile': 'Select a playing tile first',
    'ptz.bare_stream': 'PTZ moves a device\'s channel; this tile plays a bare stream',
    'pb.channel': 'Channel',
    'pb.last_24h': 'Last 24 hours',
    'pb.axis_24h': '−24 h',
    'pb.axis_12h': '−12 h',
    'pb.axis_now': 'now',
    'pb.pause': 'pause',
    'pb.resume': 'resume',
    'pb.speed': 'speed',
    'pb.download': 'download this recording',
    'pb.asking': 'asking the device…',
    'pb.count': '{n} recordings',
    'pb.count_note': '{count} {note}',
    'pb.device_error': 'device: {why}',
    'pb.incomplete': 'the device\'s list may be incomplete',
    'pb.starting': 'starting…',
    'pb.error': 'Playback error: {type} {detail}',
    'pb.playing_from': 'playing from {time}',
    'pb.no_sound_g711': 'without sound: the camera records G.711, which this player cannot play',
    'pb.hevc_unplayable': 'H.265 recordings cannot play here: this browser has no H.265 decoder for this view (download the range, or play the channel live, where the console decodes H.265 itself).',
    'pb.need_session': 'Play a device recording first',
    'pb.sought': 'sought to {time}',
    'pb.paused': 'paused',
    'pb.playing': 'playing',
    'pb.speed_set': 'speed {x}×',
    'pb.need_range': 'Pick a device recording on the timeline first',
    'pb.source.device': 'device',
    'pb.source.gmv': 'gmv',
    'pb.source.node': 'media node',
    'pb.range': '{source} {start} – {end}',
    'pb.dl.starting': 'starting',
    'pb.dl.progress': '{pct} % {state}',
    'pb.dl.save': 'save the file',
    'pb.dl.state.running': 'running',
    'pb.dl.state.interrupted': 'interrupted',
    'pb.dl.state.resuming': 'resuming',
    'pb.dl.state.finishing': 'finishing',
    'pb.dl.state.complete': 'complete',
    'pb.dl.state.failed': 'failed',
    'pb.dl.state.cancelled': 'cancelled',
    'st.h.stream': 'stream',
    'st.h.codec': 'codec',
    'st.h.size': 'size',
    'st.h.kbps': 'kbit/s',
    'st.h.packets': 'packets',
    'st.h.lost': 'lost',
    'st.h.viewers': 'viewers',
    'st.h.source': 'source',
    'st.sip': 'SIP',
    'st.c.received': 'SIP messages received',
    'st.c.malformed': 'malformed messages',
    'st.c.registers': 'registrations',
    'st.c.auth_failures': 'authentication failures',
    'st.c.refused': 'refused (unknown or unregistered sender, tables full)',
    'st.c.rate_limited': 'registrations dropped over the challenge rate',
    'st.c.spoofed': 'claiming a registered device from another address',
    'st.c.keepalives': 'keepalives',
    'st.c.responses_unmatched': 'answers to no request of ours',
    'st.c.retransmissions': 'requests sent again',
    'st.c.retransmissions_absorbed': 'repeated requests answered from memory',
    'st.c.transactions_timed_out': 'requests unanswered (timed out)',
    'st.c.lenient_bodies': 'message bodies longer than their Content-Length (taken)',
    'st.c.query_failures': 'queries that failed',
    'st.c.alarms': 'alarms',
    'st.c.outputs_dropped': 'messages not sent (queue full)',
    'nodes.no_sip': 'SIP is disabled: no control plane here.',
    'nodes.single': 'This control keeps its own registry (SQLite).',
    'nodes.active': 'This control ({instance}) is active: it holds the shared registry\'s lease (epoch {epoch}).',
    'nodes.standby': 'This control ({instance}) is standby: the active control is {leader}. Plays and changes go there.',
    'nodes.no_leader': '(none yet)',
    'nodes.all_in_one': 'All in one: every stream runs in this process (media nodes are for {setting}).',
    'nodes.none': 'No media node yet: list them in node.media_nodes, or let them announce themselves.',
    'nodes.h.node': 'media node',
    'nodes.h.state': 'state',
    'nodes.h.streams': 'streams',
    'nodes.h.placed': 'placed here',
    'nodes.h.viewers': 'viewers',
    'nodes.h.ingest': 'ingest Mbit/s',
    'nodes.h.cpu': 'CPU',
    'nodes.h.keepalive': 'last keepalive',
    'nodes.address': '{api} (media {ip})',
    'nodes.state.up': 'up',
    'nodes.state.down': 'down',
    'nodes.state.unknown': 'unknown',
    'nodes.draining': '{state}, draining',
    'nodes.never': 'never',
    'nodes.ago': '{s} s ago',
    'nodes.drain': 'drain',
    'nodes.undrain': 'undrain',
    'nodes.drain_title': 'Place no new stream here (its streams stay)',
    'nodes.undrain_title': 'Place new streams here again',
    'ev.intro_before': 'Live from ',
    'ev.intro_after': '; newest first.',
    'ev.alarm': '{what} (priority {priority})',
    'ev.alarm_default': 'alarm',
    'ev.kind.alarm': 'alarm',
    'ev.kind.device_online': 'device_online',
    'ev.kind.device_offline': 'device_offline',
    'ev.kind.registration_failed': 'registration_failed',
    'ev.kind.position': 'position',
    'ev.kind.catalog_changed': 'catalog_changed',
    'ev.kind.stream_started': 'stream_started',
    'ev.kind.stream_stopped': 'stream_stopped',
    'ev.kind.recording_closed': 'recording_closed',
    'ev.kind.recordings_deleted': 'recordings_deleted',
    'ev.kind.download_finished': 'download_finished',
    'ev.kind.broadcast_started': 'broadcast_started',
    'ev.kind.broadcast_stopped': 'broadcast_stopped',
    'ev.kind.media_node_announced': 'media_node_announced',
    'ev.kind.media_node_up': 'media_node_up',
    'ev.kind.media_node_down': 'media_node_down',
    'ev.kind.control_active': 'control_active',
    'ev.kind.control_standby': 'control_standby',
    'ev.kind.upstream_registered': 'upstream_registered',
    'ev.kind.upstream_lost': 'upstream_lost',
    'ev.kind.upstream_session_started': 'upstream_session_started',
    'ev.kind.upstream_session_stopped': 'upstream_session_stopped',
    'talk.target': '{name}: {state}',
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
    'nav.events_badge': '{n} alarms not acknowledged',
    'err.too_many': 'Too many',
    'dev.ob.open': 'How to connect a camera',
    'dev.ob.close': 'Hide',
    'dev.ob.title': 'Connect a camera (GB/T 28181)',
    'dev.ob.intro': 'On the camera\'s GB/T 28181 (platform access) page, enter these values: it then registers here by itself and shows in the list below.',
    'dev.ob.loading': 'Loading the connection details…',
    'dev.ob.failed': 'The connection details could not be read:',
    'dev.ob.unsupported': 'This gmv does not give its connection details (HTTP {status}; too old?).',
    'dev.ob.server_id': 'SIP server ID',
    'dev.ob.domain': 'SIP server domain',
    'dev.ob.address': 'SIP server address',
    'dev.ob.port': 'SIP server port',
    'dev.ob.transport': 'Signalling transport',
    'dev.ob.transports': '{list} (either)',
    'dev.ob.device_id': 'Device ID',
    'dev.ob.device_id_hint': 'The camera\'s own 20-digit ID, as set on the camera (optionally set up below first).',
    'dev.ob.password': 'Password',
    'dev.ob.pw.rule': 'The device\'s own password when one is set for it here; otherwise the site password (sip.password in gmv\'s config).',
    'dev.ob.pw.site_set': 'A site password is set.',
    'dev.ob.pw.site_unset': 'No site password is set (sip.password is empty): set one, or give each device its own.',
    'dev.ob.pw.hidden': 'Passwords are never shown here: ask your administrator.',
    'dev.ob.rtp': 'Media (RTP) ports',
    'dev.ob.rtp_single': '{port} (one port for every stream)',
    'dev.ob.rtp_range': '{min}–{max}',
    'dev.ob.rtp_hint': 'Any firewall between the camera and gmv must let these UDP and TCP ports through.',
    'dev.ob.copy': 'copy',
    'dev.ob.copy_title': 'Copy {what}',
    'dev.ob.copied': 'copied',
    'dev.ob.copy_failed': 'select and copy it by hand',
    'dev.ob.add_title': 'Add a device',
    'dev.ob.edit_title': 'Settings of device {id}',
    'dev.ob.add_intro': 'Optional: set a device up, before or after it registers, to give it a name, a password of its own or how its video comes.',
    'dev.ob.f.id': 'Device ID (20 digits)',
    'dev.ob.f.name': 'Name',
    'dev.ob.f.password': 'Own password',
    'dev.ob.f.password_new': 'empty: the site password',
    'dev.ob.f.password_keep': 'empty: unchanged',
    'dev.ob.f.password_clear': 'remove its own password (use the site password)',
    'dev.ob.f.transport': 'Video transport',
    'dev.ob.f.ssrc': 'SSRC check',
    'dev.ob.t.default': 'site default',
    'dev.ob.t.udp': 'UDP',
    'dev.ob.t.tcp': 'TCP, the device connects to gmv (passive)',
    'dev.ob.t.tcp-active': 'TCP, gmv connects to the device (active)',
    'dev.ob.s.learn': 'learn (follow the SSRC the device sends)',
    'dev.ob.s.strict': 'strict (only the SSRC agreed)',
    'dev.ob.add': 'Add device',
    'dev.ob.save': 'Save',
    'dev.ob.cancel': 'Cancel',
    'dev.ob.saving': 'Saving…',
    'dev.ob.added': 'Device {id} added.',
    'dev.ob.saved': 'Device {id} saved.',
    'dev.ob.removed': 'Device {id} removed.',
    'dev.ob.bad_id': 'A device ID is 20 digits.',
    'dev.ob.err.exists': 'Device {id} is set up already: change it in the list below.',
    'dev.ob.err.forbidden': 'Not saved: adding, changing or removing devices takes an admin key.',
    'dev.ob.err.unsupported': 'This gmv cannot set devices up from the console (HTTP {status}; too old?).',
    'dev.ob.err.other': 'Not saved:',
    'dev.ob.not_admin': 'Adding, changing and removing devices takes an admin key (this key is an operator\'s or a viewer\'s): sign in with one to do it. A camera needs only the details above.',
    'dev.ob.list_title': 'Devices set up here',
    'dev.ob.list_none': 'No device is set up here yet: a camera with the site password needs none.',
    'dev.ob.list_failed': 'The devices set up here could not be read:',
    'dev.ob.list_forbidden': 'This key may not see the devices set up here (it takes an admin key).',
    'dev.ob.h.id': 'Device ID',
    'dev.ob.h.name': 'Name',
    'dev.ob.h.password': 'Password',
    'dev.ob.h.transport': 'Transport',
    'dev.ob.h.ssrc': 'SSRC check',
    'dev.ob.h.state': 'State',
    'dev.ob.pw.own': 'its own',
    'dev.ob.pw.site': 'site password',
    'dev.ob.state.never': 'not registered yet',
    'dev.ob.edit': 'edit',
    'dev.ob.remove': 'remove',
    'dev.ob.remove_confirm': 'remove {id}?',
    'dev.ob.remove_title': 'Forget this device: its settings, and its registration if it is registered',
    'dev.edit': 'edit settings',
    'dev.f.settings': 'set up in gmv',
    'dev.settings': 'name {name} · password: {password} · transport {transport} · SSRC check {ssrc}',
    'ev.history_loading': 'Loading the history…',
    'ev.history_failed': 'The history could not be read (live events still come):',
    'ev.filter.kind': 'Kind',
    'ev.filter.all_kinds': 'all kinds',
    'ev.filter.device': 'Device',
    'ev.filter.all_devices': 'all devices',
    'ev.filter.unacked': 'unacknowledged alarms only',
    'ev.shown': '{n} shown of {total} events',
    'ev.none': 'No event matches.',
    'ev.kind.alarm_acknowledged': 'alarm_acknowledged',
    'ev.name_id': '{name} ({id})',
    'ev.ack': 'acknowledge',
    'ev.ack_title': 'Acknowledge this alarm (with a note if you like)',
    'ev.ack_note': 'note (optional)',
    'ev.ack_send': 'acknowledge',
    'ev.ack_cancel': 'cancel',
    'ev.acking': 'acknowledging…',
    'ev.acked': '✓ acknowledged by {by} at {time}',
    'ev.acked_note': '✓ acknowledged by {by} at {time}: {note}',
    'ev.acked_unknown': '✓ acknowledged',
    'ev.ack_failed': 'Not acknowledged: {why}',
    'ev.ack_of': 'alarm #{id}',
    'ev.ack_event': '{alarm} acknowledged by {by}',
    'ev.ack_event_note': '{alarm} acknowledged by {by}: {note}',
    'ev.live': 'live view',
    'ev.live_title': 'Play this alarm\'s channel in the live wall',
    'ev.clip': 'play clip',
    'ev.clip_title': 'Play the recording made around this alarm',
    'ev.player_title': 'Alarm clip: {where}, {time}',
    'ev.player_close': 'close',
    'ev.player_error': 'The clip does not play: {type} {detail}',
    'toast.alarm': 'Alarm',
    'toast.repeat': '×{n}',
    'toast.events': 'events',
    'toast.close': 'Dismiss',
    'ptz.up_left': 'Up and left',
    'ptz.up_right': 'Up and right',
    'ptz.down_left': 'Down and left',
    'ptz.down_right': 'Down and right',
    'ptz.speed': 'speed',
    'ptz.speed_title': 'Speed of pan, tilt, zoom, focus and iris',
    'ptz.focus': 'focus',
    'ptz.focus_near': 'near',
    'ptz.focus_far': 'far',
    'ptz.iris': 'iris',
    'ptz.iris_open': 'open',
    'ptz.iris_close': 'close',
    'ptz.presets_of': 'of {label}',
    'ptz.home': 'Home position',
    'ptz.home_title': 'Return to a preset by itself once the camera has been left alone this many seconds',
    'ptz.home_preset': 'preset',
    'ptz.home_after': 'seconds idle before it returns (0..86400)',
    'ptz.home_set': 'set',
    'ptz.home_off': 'off',
    'ptz.home_on_done': 'Home position: preset {n} after {s} s idle.',
    'ptz.home_off_done': 'Home position off.',
    'ptz.need_home': 'Select a device tile, a preset 1..255 and 0..86400 seconds',
    'dev.ob.ss.learn': 'learn',
    'dev.ob.ss.strict': 'strict',
    'nav.recordings': 'Recordings',
    'err.bad_plan': 'The plan was refused',
    'err.being_written': 'The recording is being written',
    'rec.tab.files': 'Recordings',
    'rec.tab.plans': 'Record plans',
    'rec.source': 'Channel or stream',
    'rec.date': 'Date',
    'rec.from': 'From',
    'rec.to': 'to',
    'rec.show': 'Show',
    'rec.today': 'Today',
    'rec.src.channels': 'Channels',
    'rec.src.streams': 'Streams',
    'rec.src.stream': 'stream {id}',
    'rec.src.recorded': '{label} · recorded',
    'rec.src.none': '(no channel or stream yet)',
    'rec.loading': 'Loading the recordings…',
    'rec.none': 'No recording of {source} on {date} from {from} to {to}.',
    'rec.none_hint': 'gmv records a stream while its recording is on (the Streams API, or {config} in the config), for an alarm clip, or while its channel\'s record plan is in force. Choose another day, time or channel.',
    'rec.count': '{n} recordings of {source} on {date} from {from} to {to} ({alarms} of them alarm clips), {length} recorded.',
    'rec.count_one': 'One recording of {source} on {date} from {from} to {to} ({alarms} alarm clips), {length} recorded.',
    'rec.truncated': 'Only the first {n} are shown: choose a shorter time range.',
    'rec.err.no_date': 'Choose a date.',
    'rec.err.bad_time': 'The time is not valid: enter it as hours and minutes.',
    'rec.err.end_before_start': 'The end is before the start: choose a later end (a range ends on the same day).',
    'rec.err.no_source': 'Choose a channel or a stream (none is known yet: a device\'s channels show once it has registered).',
    'rec.err.unauthorized': 'This key is not valid any more: sign out and sign in again.',
    'rec.err.forbidden': 'This key may not see the recordings (its role is too low).',
    'rec.err.network': 'gmv did not answer: the recordings could not be read. Try again.',
    'rec.err.load': 'The recordings could not be read:',
    'rec.zoom_in': 'Zoom in (down to an hour)',
    'rec.zoom_out': 'Zoom out (up to the whole range)',
    'rec.pan_back': 'Earlier',
    'rec.pan_on': 'Later',
    'rec.span': '{from} – {to} shown ({length})',
    'rec.legend.cont': 'continuous',
    'rec.legend.alarm': 'alarm clip',
    'rec.timeline_title': 'Click to play from there',
    'rec.seg.cont': 'Recorded {start} – {end}: click to play from there',
    'rec.seg.alarm': 'Alarm clip {start} – {end}: click to play',
    'rec.nothing_at': 'Nothing was recorded at {time}: click a coloured span.',
    'rec.playing': 'Playing the {kind} from {time}',
    'rec.play_error': 'The recording does not play: {type} {detail}',
    'rec.ended': 'The end of the recording.',
    'rec.kind.cont': 'continuous recording',
    'rec.kind.alarm': 'alarm clip',
    'rec.kind.alarm_ids': 'alarm clip ({ids})',
    'rec.kind.writing': '{kind}, being written',
    'rec.files_title': 'Files',
    'rec.h.start': 'Start',
    'rec.h.length': 'Length',
    'rec.h.size': 'Size',
    'rec.h.kind': 'Kind',
    'rec.play_title': 'Play this file',
    'rec.download': 'download',
    'rec.download_title': 'Download this file (MP4)',
    'rec.delete': 'delete',
    'rec.delete_title': 'Delete this file from gmv (asks again first)',
    'rec.delete_writing': 'A file being written cannot be deleted: stop its recording first',
    'rec.delete_confirm': 'delete it?',
    'rec.deleted': 'The recording of {time} was deleted.',
    'rec.err.delete': 'Not deleted:',
    'rec.err.delete_forbidden': 'Not deleted: deleting recordings takes an operator or admin key (this key is a viewer\'s).',
    'rec.err.delete_gone': 'Not deleted: the file is not there any more (deleted meanwhile, or by retention).',
    'rec.err.delete_writing': 'Not deleted: the file is still being written; stop its recording first.',
    'rec.none_in_view': 'No file in the part shown: zoom out or move.',
    'rec.rows_more': 'The first {n} of {total} files in the part shown: zoom in to see the others.',
    'rec.export': 'Export {from} – {to} as one MP4',
    'rec.export_none': 'Export (choose recordings first)',
    'rec.export_cancel': 'Cancel the export',
    'rec.export_nothing': 'Nothing to export in {from} – {to}',
    'rec.export.asking': 'Exporting {from} – {to}…',
    'rec.export.progress': 'Exporting {from} – {to}: {size} so far…',
    'rec.export.done': 'Exported {size}: {file}.',
    'rec.export.again': 'save again',
    'rec.export.empty': 'gmv sent an empty file.',
    'rec.export.nothing': 'Nothing to export from {from} to {to}: no finished continuous recording there (a file still being written and alarm clips are not exported).',
    'rec.export.cancelled': 'Export cancelled.',
    'rec.export.network': 'The export failed: gmv did not answer.',
    'rec.export.failed': 'The export failed:',
    'plan.intro': 'A record plan records its channels on its weekdays and hours: gmv opens each channel and records it by itself, nobody needs to watch it.',
    'plan.list_title': 'Plans',
    'plan.h.name': 'Name',
    'plan.h.when': 'When',
    'plan.h.zone': 'Time zone',
    'plan.h.keep': 'Keeps recordings',
    'plan.h.now': 'Now',
    'plan.h.channels': 'Channels',
    'plan.none': 'No record plan yet: add one below.',
    'plan.unknown': 'Not known (see above).',
    'plan.range': '{days} {start}–{end}',
    'plan.days.all': 'every day',
    'plan.days.run': '{from}–{to}',
    'plan.day.1': 'Mon',
    'plan.day.2': 'Tue',
    'plan.day.3': 'Wed',
    'plan.day.4': 'Thu',
    'plan.day.5': 'Fri',
    'plan.day.6': 'Sat',
    'plan.day.7': 'Sun',
    'plan.keep_days': '{n} days',
    'plan.keep_default': 'as retention says',
    'plan.active': 'in force',
    'plan.inactive': 'not now',
    'plan.edit': 'edit',
    'plan.delete': 'delete',
    'plan.delete_confirm': 'delete it?',
    'plan.deleted': 'Plan {name} deleted: its channels follow no plan now.',
    'plan.f.add_title': 'Add a plan',
    'plan.f.edit_title': 'Change plan {name}',
    'plan.f.name': 'Name',
    'plan.f.zone': 'Time zone',
    'plan.f.zone_hint': 'A fixed offset such as +08:00 (China), or UTC; the hours below are in it.',
    'plan.f.keep': 'Keep its recordings (days)',
    'plan.f.keep_default': 'as retention says',
    'plan.f.ranges': 'Weekdays and hours (an end of 24:00 is midnight; across midnight is two ranges)',
    'plan.f.add_range': 'add hours',
    'plan.f.remove_range': 'Remove these hours',
    'plan.f.time_ph': 'HH:MM',
    'plan.f.start': 'Start (HH:MM)',
    'plan.f.end': 'End (HH:MM, up to 24:00)',
    'plan.f.add': 'Add plan',
    'plan.f.save': 'Save',
    'plan.f.cancel': 'Cancel',
    'plan.f.saving': 'Saving…',
    'plan.f.added': 'Plan {name} added.',
    'plan.f.saved': 'Plan {name} saved.',
    'plan.f.need_name': 'Give the plan a name.',
    'plan.err.save': 'Not saved:',
    'plan.err.assign': 'Not set:',
    'plan.err.delete': 'Not deleted:',
    'plan.err.load': 'The record plans could not be read:',
    'plan.err.sip_disabled': 'Record plans play device channels, and SIP is disabled on this gmv ({config} is empty): there are none.',
    'plan.err.unreachable': 'gmv did not answer; trying again. What is shown may be out of date.',
    'plan.why.forbidden': 'this takes an operator or admin key (this key is a viewer\'s).',
    'plan.why.unauthorized': 'this key is not valid any more: sign out and sign in again.',
    'plan.why.exists': 'a plan of this name exists already: change it from the list.',
    'plan.why.network': 'gmv did not answer.',
    'plan.channels_title': 'Channels and their plans',
    'plan.a.channel': 'Channel',
    'plan.a.plan': 'Plan',
    'plan.a.none': '(no plan)',
    'plan.a.no_channels': '(no channel known yet)',
    'plan.a.set': 'Set',
    'plan.a.saving': 'Setting…',
    'plan.a.done': '{channel} follows plan {plan} now.',
    'plan.a.removed': '{channel} follows no plan now.',
    'plan.a.need_channel': 'Choose a channel first.',
    'plan.c.channel': 'Channel',
    'plan.c.plan': 'Plan',
    'plan.c.state': 'State',
    'plan.c.since': 'Since',
    'plan.c.error': 'Last error',
    'plan.c.none': 'No channel follows a plan yet: choose a channel and a plan above.',
    'plan.c.remove': 'remove plan',
    'plan.c.remove_title': 'This channel follows no plan any more (its recording stops)',
    'plan.c.stream': 'The stream recorded',
    'plan.state.idle': 'waiting (outside its hours)',
    'plan.state.starting': 'starting',
    'plan.state.recording': 'recording',
    'plan.state.retrying': 'retrying after an error',
    'ret.title': 'Retention (read only)',
    'ret.intro': 'gmv deletes the oldest recordings by itself under these rules, set in its config file:',
    'ret.rules': 'Rules',
    'ret.not_running': 'Retention does not run on this gmv: recordings are kept until deleted.',
    'ret.max_age': 'Longest kept',
    'ret.max_used': 'Most space used',
    'ret.min_free': 'Least space left free',
    'ret.interval': 'Checked',
    'ret.no_limit': 'no limit',
    'ret.days': '{n} days',
    'ret.every': 'every {n} s',
    'ret.plans': 'Plans keeping their own time',
    'ret.plan_days': '{name}: {n} days',
    'ret.last': 'Last check',
    'ret.never': 'not yet (no rule is set, or the first check is still to come)',
    'ret.deleted': 'Deleted then',
    'ret.deleted_n': '{files} files ({size}): {why}',
    'ret.deleted_none': 'nothing',
    'ret.why.max_age': 'older than the longest kept',
    'ret.why.max_used': 'more space used than allowed',
    'ret.why.min_free': 'too little space left free',
    'ret.used': 'Recordings take',
    'ret.free': 'Free space',
    'ret.free_of': '{free} of {total}',
    'ret.error': 'Error',
    'ret.totals': 'Since gmv started',
    'ret.totals_text': '{passes} checks, {files} files deleted ({size})',
    // Sources (视频源): RTSP pull proxies and RTMP pushes.
    'nav.sources': 'Sources',
    'err.too_many': 'The limit is reached',
    'err.pull_unavailable': 'Pull proxies are unavailable on this gmv',
    'err.rtmp_disabled': 'RTMP ingest is off on this gmv',
    'src.intro': 'Cameras that only speak RTSP, and RTMP, HTTP-FLV or HLS addresses of other servers, are pulled by gmv (pull proxies); encoders, OBS and drones push RTMP to it. Both play, record and go up to upper platforms like any stream.',
    'src.viewer_note': 'This key is a viewer\'s: it sees and plays the sources. Adding, changing and deleting them, finding ONVIF cameras, moving cameras (PTZ) and push addresses take an operator or admin key: sign out and sign in with one.',
    'src.updated': 'updated {time}',
    'src.loading': 'Loading…',
    'src.proxies_title': 'Pull proxies',
    'src.proxies_intro': 'gmv dials each source\'s address (RTSP, RTMP, HTTP-FLV or HLS) and turns it into a stream: always, or on demand only while someone watches.',
    'src.count': '{n} of at most {max}',
    'src.none': 'No pull proxy yet: add a camera\'s RTSP address (or an RTMP, HTTP-FLV or HLS address) below.',
    'src.none_viewer': 'No pull proxy yet.',
    'src.h.name': 'Name',
    'src.h.url': 'Source address',
    'src.h.transport': 'Transport',
    'src.h.mode': 'Mode',
    'src.h.status': 'Status',
    'src.h.frames': 'Frames',
    'src.h.codecs': 'Video / audio',
    'src.stream_id': 'Stream ID',
    'src.mode.always': 'always',
    'src.mode.on_demand_n': 'on demand (closed {s} s after the last viewer)',
    'src.status.starting': 'starting',
    'src.status.idle': 'idle',
    'src.status.connecting': 'connecting',
    'src.status.playing': 'playing',
    'src.status.retrying': 'retrying',
    'src.status.unauthorized': 'unauthorized',
    'src.status.stopped': 'stopped',
    'src.idle_note': 'On demand: nobody watches, so the camera is not dialled; playing it dials it.',
    'src.connecting_note': 'Dialling the camera…',
    'src.retry_in': 'Next try in about {s} s.',
    'src.retry_now': 'Dialling again now.',
    'src.retry_rule': 'After each failure gmv waits longer before dialling again (now {wait} s, doubling up to 30 s); failures so far: {n}.',
    'src.dropped': '{n} dropped',
    'src.connects': 'connections: {n}',
    'src.no_audio': 'no audio',
    'src.play': '▶ Play',
    'src.edit': 'Edit',
    'src.delete': 'Delete',
    'src.delete_confirm': 'Click again to delete',
    'src.deleted': 'Pull proxy {name} deleted; its stream ended.',
    'src.perr.raw': 'The engine said: {raw}',
    'src.perr.credentials': 'The camera refused the user name or password ({code} to {method}).',
    'src.phint.credentials': 'Check the user and password in the address: edit the proxy and type the whole address again with the right password.',
    'src.perr.path': 'The camera does not know this address\'s path ({code} to {method}).',
    'src.phint.http_path': 'Check the stream\'s path on that server (for ZLMediaKit and SRS {example}).',
    'src.phint.path': 'Check the path after the port in the camera\'s manual or web page (on Hikvision cameras {example}).',
    'src.perr.transport': 'The camera refused the transport ({code} to {method}).',
    'src.phint.transport': 'Edit the proxy and choose the other transport (TCP or UDP).',
    'src.perr.camera_failing': 'The camera answered with an error ({code} to {method}).',
    'src.phint.camera_failing': 'It is failing or has too many clients; restart it or lower its number of viewers.',
    'src.perr.answered': 'The camera answered {code} to {method}.',
    'src.perr.refused': 'Nothing accepts connections at this address and port (connection refused).',
    'src.phint.refused': 'Check the address and port (RTSP 554, RTMP 1935 by default), that the source is on and that the protocol is enabled.',
    'src.perr.no_answer': 'The camera does not answer.',
    'src.phint.no_answer': 'Check that it is on and reachable from gmv (address, network, firewall).',
    'src.perr.unreachable': 'The camera\'s network cannot be reached from gmv.',
    'src.phint.unreachable': 'Check the address and the route between gmv and the camera.',
    'src.perr.dns': 'The camera\'s host name cannot be found.',
    'src.phint.dns': 'Check the name, or use the camera\'s IP address.',
    'src.perr.connect': 'gmv cannot connect to the camera.',
    'src.perr.slow': 'The camera did not start the stream within {s} s.',
    'src.perr.codec': 'The source has no H.264 or H.265 video; it offers:',
    'src.phint.codec': 'Set the camera\'s video encoding to H.264 or H.265.',
    'src.perr.silent': 'The camera stopped sending for {s} s.',
    'src.perr.ended': 'The camera ended the session.',
    'src.phint.silent': 'It restarted, or the network dropped; gmv dials again by itself.',
    'src.perr.parameters': 'The camera\'s video parameters cannot be used:',
    'src.perr.stream': 'gmv could not open the proxy\'s stream:',
    'src.phint.stream': 'gmv tries again in a moment.',
    'src.perr.other': 'The source failed:',
    'src.f.add_title': 'Add a pull proxy',
    'src.f.edit_title': 'Change pull proxy {name}',
    'src.f.name': 'Name',
    'src.f.name_ph': 'letters, digits, _ and -, e.g. lobby',
    'src.f.url': 'Source address: RTSP, RTMP, HTTP-FLV or HLS (with user and password)',
    'src.f.url_ph': 'rtsp://user:password@192.168.1.64:554/Streaming/Channels/101',
    'src.f.transport': 'Transport',
    'src.f.tcp': 'TCP (recommended)',
    'src.f.udp': 'UDP',
    'src.f.mode': 'Mode',
    'src.f.always': 'Always: pulled all the time',
    'src.f.on_demand': 'On demand: pulled while someone watches',
    'src.f.idle': 'Close after no viewer for (s)',
    'src.f.idle_ph': '30',
    'src.f.url_note': 'The user and password go in the address; gmv keeps them and shows the password only as ***.',
    'src.f.url_keep': 'Leave the address as it is to keep the password; to change the address, type it whole, with the password.',
    'src.f.add': 'Add',
    'src.f.save': 'Save',
    'src.f.cancel': 'Cancel',
    'src.f.saving': 'Saving…',
    'src.f.added': 'Pull proxy {name} added: gmv dials the camera now.',
    'src.f.saved': 'Pull proxy {name} saved: gmv dials the camera again with it.',
    'src.f.need_name': 'Give the proxy a name.',
    'src.f.need_url': 'Enter the source\'s address (for a camera, its RTSP address).',
    'src.f.retype_password': 'The address still holds *** where the password was: type the real password (or leave the address as it was to keep it).',
    'src.err.add': 'The pull proxy was not added:',
    'src.err.save': 'The change was not saved:',
    'src.err.delete': 'It was not deleted:',
    'src.why.forbidden': 'this key is a viewer\'s; it takes an operator or admin key.',
    'src.why.unauthorized': 'this key is not valid any more: sign out and sign in again.',
    'src.why.exists': 'a pull proxy named {name} exists already; choose another name or edit that one.',
    'src.why.too_many': 'gmv keeps at most {max} pull proxies; delete one first.',
    'src.why.gone': 'there is no pull proxy {name} any more (deleted meanwhile).',
    'src.why.pull_unavailable': 'pull proxies are unavailable on this gmv (its log at start says why).',
    'src.why.network': 'gmv did not answer; try again.',
    'src.why.name': 'the name takes letters, digits, _ and - only (at most 64).',
    'src.why.url_long': 'the address is longer than {n} characters.',
    'src.why.scheme': 'gmv cannot pull {scheme} addresses; it pulls {list}.',
    'src.why.scheme_push': 'An encoder that speaks RTMP pushes to gmv instead: get it a push address under RTMP pushes.',
    'src.why.udp_rtsp_only': 'UDP is for {rtsp} addresses only; choose TCP.',
    'src.why.rtmp_url': 'an RTMP address names an app and a stream, like {example}.',
    'src.why.no_host': 'the address names no camera (nothing after {rtsp}).',
    'src.why.url_invalid': 'the address is not valid; it reads like {example}',
    'src.why.idle': 'the time without a viewer is a whole number of seconds from 1 to 3600.',
    'src.why.mode': 'the mode is always or on demand.',
    'src.why.transport': 'the transport is TCP or UDP.',
    'src.list.proxies': 'The pull proxies could not be read:',
    'src.list.rtmp': 'The RTMP pushes could not be read:',
    'src.list.unreachable': 'gmv did not answer; trying again. What is shown may be out of date.',
    'src.rtmp_title': 'RTMP pushes',
    'src.rtmp_intro': 'Encoders publishing to gmv now. A push address carries a token: give each encoder its own.',
    'src.rtmp.off': 'RTMP ingest is off on this gmv ({config} in its config): no encoder can push.',
    'src.rtmp.none': 'No encoder is publishing now. Get a push address below and give it to the encoder.',
    'src.rtmp.none_viewer': 'No encoder is publishing now.',
    'src.rtmp.counters': 'RTMP on {listen}: publishing now {publishing}; published {published}; connections {accepted}; refused: bad token {refused_token}, name in use {refused_exists}, busy {refused_busy}, not RTMP {refused_protocol}; unreadable messages {demux_errors}.',
    'src.h.push_name': 'Stream name',
    'src.h.video': 'Video',
    'src.h.audio': 'Audio',
    'src.h.kbps': 'kbit/s',
    'src.h.viewers': 'Viewers',
    'src.h.since': 'Publishing',
    'src.waiting': 'waiting for the first frame',
    'src.for_s': 'for {s} s',
    'src.for_m': 'for {m} min {s} s',
    'src.for_h': 'for {h} h {m} min',
    'src.pub.title': 'Get a push address',
    'src.pub.stream': 'Stream name (app/stream)',
    'src.pub.days': 'Valid for (days)',
    'src.pub.submit': 'Get a push address',
    'src.pub.issuing': 'Asking gmv…',
    'src.pub.issued': 'Push address for {stream}, valid {days} days:',
    'src.pub.url': 'Full address',
    'src.pub.url_hint': 'For ffmpeg and most encoders: the whole address in one field.',
    'src.pub.server': 'OBS: Server',
    'src.pub.key': 'OBS: Stream key',
    'src.pub.expires': 'Valid until',
    'src.pub.stream_id': 'Stream ID',
    'src.pub.stream_id_hint': 'listed above and playable once the encoder publishes',
    'src.pub.secret': 'Keep it secret: whoever has it can publish this stream until it expires.',
    'src.pub.need_stream': 'Enter a stream name as app/stream, e.g. live/cam1.',
    'src.pub.failed': 'No push address was issued:',
    'src.pub.why.rtmp_off': 'RTMP ingest is off on this gmv ({config} in its config).',
    'src.pub.why.format': 'the stream name is app/stream with one slash, e.g. {example}.',
    'src.pub.why.names': 'the app and stream names take letters, digits, _ and - only (at most 64 each).',
    'src.pub.why.days': 'The validity is a whole number of days from 1 to {max}.',
    'err.camera_unauthorized': 'The camera refused the user name or password',
    'err.camera_unreachable': 'The camera did not answer',
    'err.camera_error': 'The camera answered with an error',
    'err.no_profile': 'The camera has no stream with an address',
    'err.no_stream_uri': 'The camera gave no stream address',
    'err.not_onvif': 'Not made from an ONVIF camera',
    'err.no_ptz': 'The camera has no PTZ',
    'src.ov.title': 'ONVIF cameras',
    'src.ov.intro': 'Find the ONVIF cameras on the network, read a camera\'s streams and add one as a pull proxy in one step: gmv keeps its user and password, and moves it (PTZ) from its row in the list above.',
    'src.ov.find_title': 'Find cameras',
    'src.ov.probe': 'Probe address (optional)',
    'src.ov.probe_note': 'Empty: gmv asks the whole local network at once (multicast). Cameras on another subnet or behind a router do not hear that: type the camera\'s IP address (port 3702 is added).',
    'src.ov.discover': 'Discover',
    'src.ov.discovering_lan': 'Asking the local network…',
    'src.ov.discovering_at': 'Asking {address}…',
    'src.ov.found': 'Cameras that answered {probed} within {s} s: {n}. Pick one to read it.',
    'src.ov.found_none': 'No camera answered {probed} within {s} s.',
    'src.ov.none_hint_lan': 'Cameras on another subnet or behind a router do not hear the multicast: type a camera\'s IP address as the probe address, or its device address under Read a camera. Check also that ONVIF is enabled on the cameras.',
    'src.ov.none_hint_at': 'Check the address, that the camera is on and reachable from gmv, and that ONVIF and its discovery are enabled on it (UDP port 3702). Its device address can also be read directly below.',
    'src.ov.h.name': 'Name',
    'src.ov.h.hardware': 'Model',
    'src.ov.h.address': 'Device address',
    'src.ov.no_name': '(no name given)',
    'src.ov.no_address': 'no usable address',
    'src.ov.use': 'Use',
    'src.ov.use_title': 'Read this camera: its address goes into the form below',
    'src.ov.added_as': 'added as {name}',
    'src.ov.read_title': 'Read a camera',
    'src.ov.device': 'Device address (ONVIF)',
    'src.ov.device_note': 'The user and password are the camera\'s own: its web page\'s, or a user added on the camera for ONVIF. An IP address alone will do: gmv completes it as {example}.',
    'src.ov.user': 'User',
    'src.ov.password': 'Password',
    'src.ov.read': 'Read',
    'src.ov.reading': 'Reading the camera at {address}…',
    'src.ov.read_done': 'Read {camera}: {n} streams.',
    'src.ov.stale': 'The address, user or password changed: read the camera again.',
    'src.ov.need_device': 'Enter the camera\'s device address, or pick a camera found above.',
    'src.ov.https': 'gmv speaks ONVIF over {http} only: use the camera\'s {http} address (ONVIF is usually on port 80).',
    'src.ov.bad_device': 'The device address is not valid; it reads like {example}.',
    'src.ov.info.camera': 'Camera',
    'src.ov.info.firmware': 'Firmware',
    'src.ov.info.serial': 'Serial number',
    'src.ov.info.address': 'Device address',
    'src.ov.h.profile': 'Stream (profile)',
    'src.ov.h.encoding': 'Encoding',
    'src.ov.h.resolution': 'Resolution',
    'src.ov.h.ptz': 'PTZ',
    'src.ov.h.stream_uri': 'Stream address',
    'src.ov.yes': 'yes',
    'src.ov.no': 'no',
    'src.ov.no_uri': 'no stream address:',
    'src.ov.add_title': 'Add as a pull proxy',
    'src.ov.name': 'Proxy name',
    'src.ov.profile': 'Stream',
    'src.ov.add_note': 'gmv reads the camera again as it adds it, puts the user and password in the stream\'s address (shown only as ***) and keeps them for PTZ.',
    'src.ov.add': 'Add as proxy',
    'src.ov.adding': 'Adding…',
    'src.ov.added': 'Pull proxy {name} added from the camera: gmv dials it now.',
    'src.ov.added_ptz': 'Its PTZ button in the list moves the camera.',
    'src.ov.need_stream': 'Choose a stream with a stream address.',
    'src.ov.err.discover': 'No camera was asked:',
    'src.ov.err.read': 'The camera was not read:',
    'src.ov.err.add': 'The pull proxy was not added:',
    'src.ov.err.ptz': 'The camera was not moved:',
    'src.ov.err.presets': 'The presets were not read:',
    'src.ov.err.preset_go': 'The camera did not go to the preset:',
    'src.ov.err.preset_save': 'The preset was not saved:',
    'src.ov.err.preset_delete': 'The preset was not deleted:',
    'src.ov.why.unauthorized': 'the camera refused the user name or password.',
    'src.ov.fix.unauthorized': 'Check the user and password: the camera\'s own login, or a user added on the camera for ONVIF (on Hikvision cameras: Configuration › Network › Advanced Settings › Integration Protocol: enable ONVIF and add a user there). Several wrong tries can lock the user for a while.',
    'src.ov.fix.unauthorized_proxy': 'The camera\'s password has changed since the proxy was added: delete the proxy and add it again from the camera with the new password.',
    'src.ov.why.refused': 'nothing accepts connections at {address} (connection refused).',
    'src.ov.why.timeout': 'the camera at {address} did not answer within {s} s.',
    'src.ov.why.unreachable': 'the camera at {address} did not answer:',
    'src.ov.fix.unreachable': 'Check the address and port (ONVIF is usually on port 80, on some cameras 8000, 8080 or 8899), that the camera is on and reachable from gmv (network, firewall), and that ONVIF is enabled on it.',
    'src.ov.why.camera_error': 'the camera answered with an error:',
    'src.ov.fix.camera_error': 'This address may not be the camera\'s ONVIF service (usually {path}), or the camera does not do what was asked: check that ONVIF is enabled on it, and its firmware.',
    'src.ov.fix.preset_error': 'The preset may have been deleted on the camera meanwhile: the list is read again.',
    'src.ov.why.busy': 'gmv is talking to {n} cameras at once already; try again in a moment.',
    'src.ov.why.no_profile': 'the camera offers no stream with an address (no profile with a stream address).',
    'src.ov.fix.no_profile': 'Read the camera again and choose another stream; check on its web page that its video streams are on.',
    'src.ov.why.no_stream_uri': 'the camera gave no address for this stream:',
    'src.ov.fix.no_stream_uri': 'Choose another stream.',
    'src.ov.why.not_onvif': 'this proxy was not added from an ONVIF camera: gmv cannot move it.',
    'src.ov.why.no_ptz': 'the camera\'s stream has no PTZ: the camera has none, or PTZ is not set up for this stream on the camera.',
    'src.ov.why.probe_address': 'the probe address is an IP address and a port, like {example}.',
    'src.ov.why.forbidden': 'this key is a viewer\'s; it takes an operator or admin key.',
    'src.ov.why.gone': 'there is no pull proxy {name} any more (deleted meanwhile).',
    'src.ov.onvif_line': 'ONVIF camera {device} · stream {profile}',
    'src.ov.no_ptz_note': '· no PTZ',
    'src.ov.ptz_button_title': 'Move the camera (PTZ) and its presets',
    'src.ov.ptz_title': 'PTZ of {name}',
    'src.ov.ptz_hint': 'Press and hold an arrow or a zoom button to move; let go to stop.',
    'src.ov.ptz_close': 'Close',
    'src.ov.stop': 'Stop',
    'src.ov.preset_name_ph': 'name, e.g. gate',
    'src.ov.preset_save': 'Save here',
    'src.ov.preset_save_title': 'Save where the camera points now as a new preset',
    'src.ov.need_preset_name': 'Give the preset a name (1 to 64 characters).',
    'src.ov.preset_went': 'The camera turns to {name}.',
    'src.ov.preset_saved': 'Preset {name} saved.',
    'src.ov.preset_deleted': 'Preset {name} deleted.',
    // Console users (issue 28): signing in with a name and password, one's own password.
    'signin.user_intro': 'Sign in with your user name and password.',
    'signin.name': 'User name',
    'signin.password': 'Password',
    'signin.key_button': 'Sign in with the key',
    'signin.key_show': '▸ use an API key',
    'signin.key_hide': '▾ use an API key',
    'signin.need_both': 'Type your user name and password.',
    'signin.need_key': 'Type the API key.',
    'signin.signing_in': 'Signing in…',
    'signin.bad_credentials': 'Wrong user name or password.',
    'signin.throttled': 'Too many failed sign-ins from this address: try again in {wait}.',
    'signin.throttle_over': 'You may try again now.',
    'signin.throttled_unknown': 'Too many failed sign-ins from this address: wait a few minutes and try again.',
    'signin.refused': 'Sign-in refused: {why}',
    'signin.note.ended': 'Your session has ended (it expired, your password was changed or your user was removed): sign in again.',
    'signin.note.signed_out': 'You signed out.',
    'signin.note.password_changed': 'Your password was changed: sign in with the new one.',
    'nav.dashboard': 'Overview',
    'nav.users': 'Users',
    'me.password': 'Password',
    'me.title': 'Change your password',
    'me.old': 'Present password',
    'me.new': 'New password',
    'me.repeat': 'New password again',
    'me.rule': '8 to 128 bytes (a letter or digit is one byte, a Chinese character three). The console then signs you in again with the new one.',
    'me.change': 'Change password',
    'me.close': 'Close',
    'me.role_key': '{role}, API key',
    'me.need_old': 'Type your present password.',
    'me.bad_length': 'A password is 8 to 128 bytes; this one is {n}.',
    'me.mismatch': 'The two new passwords differ.',
    'me.changing': 'Changing…',
    'me.wrong_old': 'The present password is wrong.',
    'me.refused': 'Not changed: {why}',
    'me.changed': 'Password changed. You are signed in with the new one.',
    'role.viewer': 'viewer',
    'role.operator': 'operator',
    'role.admin': 'admin',
    'common.secs': '{s} s',
    'common.mins_secs': '{m} min {s} s',
    'common.days_hours': '{d} d {h} h',
    'common.hours_mins': '{h} h {m} min',
    'err.bad_credentials': 'Wrong user name or password',
    'err.too_many_failures': 'Too many failed sign-ins',
    'err.csrf': 'Refused: the change lacked this session\'s CSRF token (load the page again)',
    'err.no_sub_stream': 'The device is not set up for a sub-stream',
    'err.users_file': 'The users file cannot be read or written',
    // The dashboard (概览).
    'dash.nodes_title': 'Media nodes',
    'dash.h.cpu': 'CPU',
    'dash.h.memory': 'memory',
    'dash.errors_title': 'Recent warnings and errors',
    'dash.loading': 'Loading…',
    'dash.failed': 'The overview could not be read: {why}',
    'dash.node': 'node {id}',
    'dash.up_for': 'running for {time}',
    'dash.updated': 'updated {time}',
    'dash.c.version': 'Version',
    'dash.c.uptime': 'Running for',
    'dash.since': 'since {time}',
    'dash.c.cpu': 'CPU',
    'dash.cpu_sub': 'of one core; {cores} cores (up to {max} %)',
    'dash.c.memory': 'Memory',
    'dash.memory_sub': 'resident, this process',
    'dash.c.files': 'Open files',
    'dash.files_sub': 'files and sockets of this process',
    'dash.c.disk': 'Disk (data directory)',
    'dash.disk_free': '{size} free',
    'dash.disk_of': 'of {total} ({pct} % used)',
    'dash.disk_unknown': 'not known',
    'dash.c.streams': 'Streams',
    'dash.streams_sub': '{hls} with HLS · {rec} recording',
    'dash.c.viewers': 'Viewers',
    'dash.viewers_sub': 'FLV, HLS, WebRTC and fMP4 players',
    'dash.c.webrtc': 'WebRTC sessions',
    'dash.webrtc_sub': 'live in browsers, with sound',
    'dash.c.ingest': 'Ingest',
    'dash.ingest_sub': 'all streams coming in',
    'dash.c.lost': 'Packets lost',
    'dash.lost_sub': 'of {packets} received ({pct} %)',
    'dash.foreign_sub': '{n} dropped: not from the stream\'s source',
    'dash.c.no_media': 'Streams without media',
    'dash.no_media_sub': 'opened, but nothing came yet: see Streams',
    'dash.no_media_none': 'every stream takes media',
    'dash.c.devices': 'Devices',
    'dash.devices_online': '{n} online',
    'dash.devices_sub': '{offline} offline of {total} · {channels} channels',
    'dash.devices_none': 'SIP is off here: no device',
    'dash.no_nodes': 'No media node: every stream runs in this gmv.',
    'dash.no_errors': 'No warning or error since gmv started.',
    'dash.level.error': 'error',
    'dash.level.warn': 'warning',
    // Users (an admin's).
    'users.intro': 'People sign in to the console with a user name and password. A viewer watches live and recorded video; an operator also moves cameras, talks, records and acknowledges alarms; an admin also sets devices, upper platforms and users up. API keys, for machines, are set in the config file.',
    'users.h.name': 'Name',
    'users.h.role': 'Role',
    'users.h.created': 'Created',
    'users.add_title': 'Add a user',
    'users.f.name': 'User name',
    'users.f.role': 'Role',
    'users.f.password': 'Password',
    'users.rules': 'A name has 1 to 32 letters, digits, _ - or . ; a password 8 to 128 bytes (a Chinese character is three).',
    'users.add': 'Add user',
    'users.not_admin': 'Only an admin manages users: sign in as one.',
    'users.failed': 'The users could not be read: {why}',
    'users.err.forbidden': 'Only an admin manages users.',
    'users.err.gone': 'There is no user named {name} (deleted meanwhile?).',
    'users.err.exists': 'A user named {name} exists already.',
    'users.err.refused': 'Not saved: {why}',
    'users.bad_password': 'A password is 8 to 128 bytes long (a Chinese character is three).',
    'users.bad_name': 'A user name is 1 to 32 letters, digits, _ - or . (no spaces).',
    'users.counters': 'Since gmv started: {ok} sign-ins, {failed} failed, {throttled} refused after too many failures.',
    'users.role_of': 'Role of {name}',
    'users.pw_set': 'new password',
    'users.pw_cancel': 'cancel',
    'users.delete_title': 'Delete this user (asked once more)',
    'users.delete': 'delete',
    'users.delete_confirm': 'delete {name}?',
    'users.delete_self_confirm': 'delete yourself ({name})? You will be signed out',
    'users.you': '(you)',
    'users.pw_new': 'new password',
    'users.pw_for': 'New password for {name}:',
    'users.pw_save': 'set',
    'users.saving': 'Saving…',
    'users.role_set': '{name} is now {role}.',
    'users.pw_done': '{name}\'s password is set: their sessions ended, they sign in with the new one.',
    'users.deleted': '{name} deleted.',
    'users.added': '{name} added ({role}).',
    // Sub-streams (辅码流).
    'dev.ob.f.sub': 'Sub-stream (small tiles of the live wall)',
    'dev.ob.sub.none': 'none: the main stream everywhere',
    'dev.ob.sub.none_short': 'none',
    'dev.ob.sub.stream': 'sub-stream (generic) a=stream:1',
    'dev.ob.sub.streamnumber': 'sub-stream (GB/T 28181-2022) a=streamnumber:1',
    'dev.ob.sub.streamprofile': 'sub-stream (Dahua) a=streamprofile:1',
    'dev.ob.sub.streamMode': 'sub-stream (Mercury / TP-LINK) a=streamMode:sub',
    'dev.ob.h.sub': 'Sub-stream',
    'dev.settings_sub': ' · {sub}',
    'wall.sub': 'sub',
    'wall.sub_title': 'The device\'s sub-stream (a small tile); full screen plays the main stream',
  },
  'zh-CN': {
    'app.title': 'gmv 控制台',
    'signin.intro': '请使用 API 密钥登录（管理员密钥的位置见 gmv 的运行日志）。',
    'signin.key': 'API 密钥',
    'signin.button': '登录',
    'signin.bad_key': '该密钥无效。',
    'nav.devices': '设备',
    'nav.wall': '实时预览',
    'nav.playback': '录像回放',
    'nav.streams': '媒体流',
    'nav.events': '事件',
    'nav.nodes': '媒体节点',
    'nav.signout': '退出登录',
    'common.field': '{name}：',
    'common.list_sep': '、',
    'common.sentence_sep': '',
    'common.play_in_wall': '在画面墙播放',
    'err.detail': '{what}：{detail}',
    'err.status': '错误 {status}',
    'err.network': 'gmv 没有应答',
    'err.unauthorized': '未登录（或密钥已被吊销）',
    'err.forbidden': '无权执行此操作（当前密钥的角色权限不足）',
    'err.not_found': '未找到',
    'err.device_offline': '设备离线',
    'err.device_timeout': '设备无应答',
    'err.device_rejected': '设备拒绝了请求',
    'err.device_error': '设备报告错误',
    'err.busy': '系统繁忙，请稍后重试',
    'err.standby': '此控制节点处于备用状态',
    'err.sip_disabled': '此 gmv 未启用 SIP',
    'err.bad_request': '请求无效，已被拒绝',
    'err.too_many_viewers': '该流的观看人数已满',
    'err.webrtc': 'WebRTC 被拒绝（HTTP {status}）',
    'err.webrtc_off': '此 gmv 未启用 WebRTC',
    'err.bad_offer': '浏览器的 WebRTC 请求无法使用',
    'err.no_codec': '浏览器与 gmv 之间没有可用于 WebRTC 的共同编码',
    'err.not_talk': '该流不接收麦克风声音',
    'err.on_media_node': '该通道在媒体节点上播放',
    'err.offer_size': 'WebRTC 请求过大',
    'err.no_stream': '无法打开该流',
    'err.broadcast_failed': '语音广播失败',
    'err.cancelled': '已取消',
    'err.no_port': '没有空闲的媒体端口',
    'err.media_connect_failed': '媒体连接失败',
    'err.not_playback': '不是录像回放会话',
    'err.exists': '已存在',
    'err.full': '已达数量上限',
    'err.not_saved': '已更改，但未保存',
    'err.not_control': '此 gmv 不向媒体节点分配流',
    'err.method_not_allowed': '此处不允许该操作',
    'err.internal': '内部错误',
    'err.timeout': '超时',
    'err.overloaded': 'gmv 过载',
    'err.no_snapshot': '无法抓图',
    'err.no_cover': '没有封面图',
    'err.not_ready': '尚未就绪，请稍后重试',
    'err.unsupported': '不支持',
    'err.unsupported_media_type': '不支持该内容类型',
    'err.bad_audio': '该音频无法使用',
    'err.origin_not_allowed': '不允许从此页面的来源访问',
    'err.body_too_large': '请求过大',
    'err.head_too_large': '请求过大',
    'dev.filter': '搜索设备和通道',
    'dev.online_only': '仅显示在线',
    'dev.count': '显示 {n} 台，共 {total} 台设备',
    'dev.asking_channels': '正在获取通道…',
    'dev.show_channels': '展开通道',
    'dev.hide_channels': '收起通道',
    'dev.details': '设备详情',
    'dev.online': '在线',
    'dev.offline': '离线',
    'dev.channels': '{n} 个通道',
    'dev.sync': '同步目录',
    'dev.sync_title': '重新向设备查询通道目录',
    'dev.f.name': '名称',
    'dev.f.manufacturer': '厂商',
    'dev.f.model': '型号',
    'dev.f.firmware': '固件版本',
    'dev.f.address': '地址',
    'dev.f.gb': 'GB/T 28181 版本',
    'dev.f.status': '状态',
    'dev.f.subscriptions': '订阅',
    'dev.f.position': '位置',
    'dev.f.last_error': '最近错误',
    'dev.gb_ver': 'X-GB-Ver {v}',
    'dev.gb_2016': '2016（无 X-GB-Ver）',
    'dev.status': '{online} · {status} · 编码 {encode} · 录像 {record} · 设备时间 {clock}',
    'dev.sub.catalog': '目录',
    'dev.sub.alarm': '告警',
    'dev.sub.mobile_position': '移动位置',
    'dev.sub.inactive': '{kind}（未生效）',
    'dev.position': '{lat}, {lon}（{time}）',
    'dev.ask_status': '查询状态',
    'dev.asking': '查询中…',
    'wall.tiles': '分屏',
    'wall.player': '播放方式',
    'wall.player.auto': 'WebRTC（带声音），不行再用 FLV、HLS',
    'wall.player.flv': 'FLV（WebSocket），失败时用 HLS',
    'wall.player.hls': 'HLS',
    'wall.hint': '单击通道即在选中的画面中播放，也可把通道拖到某个画面上。',
    'wall.channels': '设备通道',
    'wall.channels_title': '显示或隐藏设备树',
    'wall.channels_close': '收起列表',
    'wall.tree_hint': '单击：在选中的画面中播放。拖动：在放下的画面中播放。',
    'wall.empty': '空闲',
    'wall.sound': '声音',
    'wall.mute': '静音',
    'wall.sound_title': '打开/关闭声音',
    'wall.snap': '抓图',
    'wall.snap_title': '抓拍一张图片',
    'wall.full': '全屏',
    'wall.full_title': '全屏显示',
    'wall.close_title': '关闭',
    'wall.connecting': '正在连接…',
    'wall.playing_in': '{label}：画面墙第 {n} 个画面',
    'wall.stream_label': '流 {id}',
    'wall.playback_error': '播放出错：{type} {detail}',
    'wall.stats': '{player} · {codec} {width}×{height} · {kbps} kbit/s · {fps} 帧/秒 · 丢包 {lost}',
    'wall.no_media': '尚无视频：{why}',
    'wall.closed_no_media': '已关闭，未收到视频：{why}',
    'wall.no_player': '此浏览器既不能播放 FLV（Media Source Extensions），也不能播放 HLS',
    'wall.ended': '视频流已结束：gmv 关闭了连接（代码 {code}）。',
    'wall.flv_refused': '视频流未能通过 WebSocket 打开（连接关闭，代码 {code}）。',
    'wall.flv_too_big': '已停止：视频流发送了超过 {mib} MiB 的数据仍不成一个完整的 FLV 标签。',
    'wall.flv_bad': '已停止：视频流不是 FLV（{why}）。',
    'wall.wasm_codec': '已停止：视频流现在发送 {codec}，控制台自带的解码器只能播放 H.265。',
    'wall.hevc_unplayable': '无法在此播放 H.265：此浏览器没有 H.265 解码器，控制台自带的解码器也未能加载（{why}）。',
    'wall.hevc_format': '无法在此播放 H.265：控制台的解码器无法显示此画面（{why}）。',
    'wall.hevc_undecodable': '无法在此播放 H.265：控制台的解码器无法解码此视频流（FFmpeg 错误 {code}）。',
    'wall.hevc_no_wasm': '此浏览器不能在 Worker 中运行 WebAssembly',
    'wall.hevc_worker_failed': '其 Worker 脚本出错',
    'wall.hevc_load_slow': '{s} 秒内未就绪',
    'wall.no_sound': '无声音：{why}',
    'wall.no_sound.flv_g711': 'FLV 播放器不能播放 G.711（WebRTC 播放器可以）',
    'wall.no_sound.hls_g711': 'HLS 不带 G.711 声音（WebRTC 播放器可以播放）',
    'wall.no_sound.codec': '{codec} 声音不能通过 WebRTC 传送',
    'wall.no_sound.no_webrtc': '此浏览器不支持 WebRTC',
    'wall.no_sound.failed': 'WebRTC 连接失败',
    'ptz.title': '云台',
    'ptz.select_tile': '（请选择画面）',
    'ptz.up': '向上',
    'ptz.down': '向下',
    'ptz.left': '向左',
    'ptz.right': '向右',
    'ptz.zoom_in': '变倍 +',
    'ptz.zoom_out': '变倍 −',
    'ptz.presets': '预置位',
    'ptz.preset_number': '编号',
    'ptz.preset_save': '设置预置位',
    'ptz.preset_save_title': '把摄像机当前的位置保存为该编号（1–255）的预置位',
    'ptz.go': '调用',
    'ptz.go_title': '转到此预置位',
    'ptz.delete': '删除',
    'ptz.asking': '查询中…',
    'ptz.no_presets': '无预置位',
    'ptz.need_preset': '请选择设备的画面，并输入 1–255 的预置位编号',
    'ptz.need_tile': '请先选择正在播放的画面',
    'ptz.bare_stream': '云台只能控制设备的通道；此画面播放的是裸流',
    'pb.channel': '通道',
    'pb.last_24h': '最近 24 小时',
    'pb.axis_24h': '−24 小时',
    'pb.axis_12h': '−12 小时',
    'pb.axis_now': '现在',
    'pb.pause': '暂停',
    'pb.resume': '继续',
    'pb.speed': '倍速',
    'pb.download': '下载此段录像',
    'pb.asking': '正在查询设备录像…',
    'pb.count': '{n} 段录像',
    'pb.count_note': '{count}（{note}）',
    'pb.device_error': '设备：{why}',
    'pb.incomplete': '设备返回的录像列表可能不完整',
    'pb.starting': '正在启动…',
    'pb.error': '回放出错：{type} {detail}',
    'pb.playing_from': '从 {time} 开始播放',
    'pb.no_sound_g711': '无声音：摄像机录制的是 G.711 音频，此播放器无法播放',
    'pb.hevc_unplayable': '此处无法播放 H.265 录像：本页面在此浏览器中没有 H.265 解码器（可下载该时段，或在实时预览中播放该通道，控制台会自行解码 H.265）。',
    'pb.need_session': '请先播放一段设备录像',
    'pb.sought': '已跳转到 {time}',
    'pb.paused': '已暂停',
    'pb.playing': '播放中',
    'pb.speed_set': '倍速 {x}×',
    'pb.need_range': '请先在时间轴上选择一段设备录像',
    'pb.source.device': '设备录像',
    'pb.source.gmv': '平台录像',
    'pb.source.node': '媒体节点录像',
    'pb.range': '{source} {start} – {end}',
    'pb.dl.starting': '正在开始',
    'pb.dl.progress': '{pct} % {state}',
    'pb.dl.save': '保存文件',
    'pb.dl.state.running': '下载中',
    'pb.dl.state.interrupted': '已中断',
    'pb.dl.state.resuming': '正在续传',
    'pb.dl.state.finishing': '正在收尾',
    'pb.dl.state.complete': '已完成',
    'pb.dl.state.failed': '失败',
    'pb.dl.state.cancelled': '已取消',
    'st.h.stream': '流',
    'st.h.codec': '编码',
    'st.h.size': '分辨率',
    'st.h.kbps': '码率 kbit/s',
    'st.h.packets': '包数',
    'st.h.lost': '丢包',
    'st.h.viewers': '观看数',
    'st.h.source': '来源',
    'st.sip': 'SIP 信令计数',
    'st.c.received': '收到的 SIP 消息',
    'st.c.malformed': '格式错误的消息',
    'st.c.registers': '注册',
    'st.c.auth_failures': '认证失败',
    'st.c.refused': '拒绝（未知或未注册的发送方、表已满）',
    'st.c.rate_limited': '超出质询速率而丢弃的注册',
    'st.c.spoofed': '从其他地址冒充已注册设备',
    'st.c.keepalives': '心跳',
    'st.c.responses_unmatched': '找不到对应请求的应答',
    'st.c.retransmissions': '重发的请求',
    'st.c.retransmissions_absorbed': '按已有应答回复的重复请求',
    'st.c.transactions_timed_out': '无应答（超时）的请求',
    'st.c.lenient_bodies': '长于其声明长度的消息体（已接收）',
    'st.c.query_failures': '失败的查询',
    'st.c.alarms': '告警',
    'st.c.outputs_dropped': '未发出的消息（队列已满）',
    'nodes.no_sip': '未启用 SIP：此处没有控制平面。',
    'nodes.single': '此控制节点使用自己的注册库（SQLite）。',
    'nodes.active': '此控制节点（{instance}）为主用：持有共享注册库的租约（任期 {epoch}）。',
    'nodes.standby': '此控制节点（{instance}）为备用：主用控制节点是 {leader}。播放和更改都在主用节点上进行。',
    'nodes.no_leader': '（暂无）',
    'nodes.all_in_one': '一体化部署：所有流都在本进程中运行（媒体节点只用于 {setting} 的部署）。',
    'nodes.none': '尚无媒体节点：请在 node.media_nodes 中列出，或让媒体节点自行上报。',
    'nodes.h.node': '媒体节点',
    'nodes.h.state': '状态',
    'nodes.h.streams': '流数',
    'nodes.h.placed': '分配到此',
    'nodes.h.viewers': '观看数',
    'nodes.h.ingest': '接入 Mbit/s',
    'nodes.h.cpu': 'CPU',
    'nodes.h.keepalive': '最近心跳',
    'nodes.address': '{api}（媒体地址 {ip}）',
    'nodes.state.up': '在线',
    'nodes.state.down': '离线',
    'nodes.state.unknown': '未知',
    'nodes.draining': '{state}，已停止分配',
    'nodes.never': '从未',
    'nodes.ago': '{s} 秒前',
    'nodes.drain': '停止分配',
    'nodes.undrain': '恢复分配',
    'nodes.drain_title': '不再向此节点分配新的流（已有的流保留）',
    'nodes.undrain_title': '重新向此节点分配新的流',
    'ev.intro_before': '实时事件，来自 ',
    'ev.intro_after': '，最新的在最上面。',
    'ev.alarm': '{what}（优先级 {priority}）',
    'ev.alarm_default': '告警',
    'ev.kind.alarm': '告警',
    'ev.kind.device_online': '设备上线',
    'ev.kind.device_offline': '设备离线',
    'ev.kind.registration_failed': '注册失败',
    'ev.kind.position': '位置上报',
    'ev.kind.catalog_changed': '目录变更',
    'ev.kind.stream_started': '开始推流',
    'ev.kind.stream_stopped': '停止推流',
    'ev.kind.recording_closed': '录像文件完成',
    'ev.kind.recordings_deleted': '录像已清理',
    'ev.kind.download_finished': '录像下载结束',
    'ev.kind.broadcast_started': '语音广播开始',
    'ev.kind.broadcast_stopped': '语音广播结束',
    'ev.kind.media_node_announced': '媒体节点上报',
    'ev.kind.media_node_up': '媒体节点上线',
    'ev.kind.media_node_down': '媒体节点离线',
    'ev.kind.control_active': '控制节点转为主用',
    'ev.kind.control_standby': '控制节点转为备用',
    'ev.kind.upstream_registered': '已注册到上级平台',
    'ev.kind.upstream_lost': '与上级平台失去联系',
    'ev.kind.upstream_session_started': '上级点播开始',
    'ev.kind.upstream_session_stopped': '上级点播结束',
    'talk.target': '{name}：{state}',
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
    'nav.events_badge': '{n} 条告警尚未确认',
    'err.too_many': '数量已达上限',
    'dev.ob.open': '如何接入摄像机',
    'dev.ob.close': '收起',
    'dev.ob.title': '接入摄像机（GB/T 28181）',
    'dev.ob.intro': '在摄像机的 GB/T 28181（国标平台接入）设置页面中填写以下信息，摄像机即会自动注册到本平台，并出现在下面的设备列表中。',
    'dev.ob.loading': '正在读取接入信息…',
    'dev.ob.failed': '无法读取接入信息：',
    'dev.ob.unsupported': '此 gmv 不提供接入信息（HTTP {status}，版本过旧？）。',
    'dev.ob.server_id': 'SIP 服务器编号',
    'dev.ob.domain': 'SIP 服务器域',
    'dev.ob.address': 'SIP 服务器地址',
    'dev.ob.port': 'SIP 服务器端口',
    'dev.ob.transport': '信令传输协议',
    'dev.ob.transports': '{list}（任选其一）',
    'dev.ob.device_id': '设备编号',
    'dev.ob.device_id_hint': '摄像机自己的 20 位国标编号，在摄像机上设置（也可以先在下面登记）。',
    'dev.ob.password': '注册密码',
    'dev.ob.pw.rule': '如果在这里为设备设置了独立密码，就用该密码；否则使用本平台的统一密码（gmv 配置文件中的 sip.password）。',
    'dev.ob.pw.site_set': '已设置统一密码。',
    'dev.ob.pw.site_unset': '尚未设置统一密码（sip.password 为空）：请设置统一密码，或为每台设备设置独立密码。',
    'dev.ob.pw.hidden': '密码不会在这里显示，请向管理员索取。',
    'dev.ob.rtp': '媒体（RTP）端口',
    'dev.ob.rtp_single': '{port}（所有视频流共用这一个端口）',
    'dev.ob.rtp_range': '{min}–{max}',
    'dev.ob.rtp_hint': '摄像机与 gmv 之间的防火墙须放行这些 UDP 和 TCP 端口。',
    'dev.ob.copy': '复制',
    'dev.ob.copy_title': '复制{what}',
    'dev.ob.copied': '已复制',
    'dev.ob.copy_failed': '请手动选中并复制',
    'dev.ob.add_title': '添加设备',
    'dev.ob.edit_title': '设备 {id} 的设置',
    'dev.ob.add_intro': '可选：在设备注册之前或之后登记设备，为它设置名称、独立密码或视频传输方式。',
    'dev.ob.f.id': '设备编号（20 位数字）',
    'dev.ob.f.name': '名称',
    'dev.ob.f.password': '独立密码',
    'dev.ob.f.password_new': '留空则使用统一密码',
    'dev.ob.f.password_keep': '留空则不修改',
    'dev.ob.f.password_clear': '删除独立密码（改用统一密码）',
    'dev.ob.f.transport': '视频传输方式',
    'dev.ob.f.ssrc': 'SSRC 校验',
    'dev.ob.t.default': '平台默认',
    'dev.ob.t.udp': 'UDP',
    'dev.ob.t.tcp': 'TCP 被动（设备连接 gmv）',
    'dev.ob.t.tcp-active': 'TCP 主动（gmv 连接设备）',
    'dev.ob.s.learn': '自动学习（以设备实际发送的 SSRC 为准）',
    'dev.ob.s.strict': '严格（只接受约定的 SSRC）',
    'dev.ob.add': '添加设备',
    'dev.ob.save': '保存',
    'dev.ob.cancel': '取消',
    'dev.ob.saving': '正在保存…',
    'dev.ob.added': '已添加设备 {id}。',
    'dev.ob.saved': '设备 {id} 的设置已保存。',
    'dev.ob.removed': '已删除设备 {id}。',
    'dev.ob.bad_id': '设备编号应为 20 位数字。',
    'dev.ob.err.exists': '设备 {id} 已经登记过，请在下面的列表中修改。',
    'dev.ob.err.forbidden': '未保存：添加、修改或删除设备需要管理员密钥。',
    'dev.ob.err.unsupported': '此 gmv 不支持在控制台中登记设备（HTTP {status}，版本过旧？）。',
    'dev.ob.err.other': '未保存：',
    'dev.ob.not_admin': '添加、修改和删除设备需要管理员密钥（当前密钥是操作员或查看者的）；如需操作，请用管理员密钥登录。摄像机接入只需要上面的信息。',
    'dev.ob.list_title': '已登记的设备',
    'dev.ob.list_none': '尚未登记任何设备：使用统一密码的摄像机无需登记。',
    'dev.ob.list_failed': '无法读取已登记的设备：',
    'dev.ob.list_forbidden': '当前密钥无权查看已登记的设备（需要管理员密钥）。',
    'dev.ob.h.id': '设备编号',
    'dev.ob.h.name': '名称',
    'dev.ob.h.password': '密码',
    'dev.ob.h.transport': '传输方式',
    'dev.ob.h.ssrc': 'SSRC 校验',
    'dev.ob.h.state': '状态',
    'dev.ob.pw.own': '独立密码',
    'dev.ob.pw.site': '统一密码',
    'dev.ob.state.never': '尚未注册',
    'dev.ob.edit': '修改',
    'dev.ob.remove': '删除',
    'dev.ob.remove_confirm': '确定删除 {id}？',
    'dev.ob.remove_title': '删除此设备：包括它的设置，以及已有的注册',
    'dev.edit': '修改设置',
    'dev.f.settings': '平台登记',
    'dev.settings': '名称 {name} · 密码：{password} · 传输方式 {transport} · SSRC 校验 {ssrc}',
    'ev.history_loading': '正在加载历史事件…',
    'ev.history_failed': '无法读取历史事件（实时事件仍会显示）：',
    'ev.filter.kind': '类型',
    'ev.filter.all_kinds': '全部类型',
    'ev.filter.device': '设备',
    'ev.filter.all_devices': '全部设备',
    'ev.filter.unacked': '只看未确认的告警',
    'ev.shown': '显示 {n} 条，共 {total} 条事件',
    'ev.none': '没有符合条件的事件。',
    'ev.kind.alarm_acknowledged': '告警已确认',
    'ev.name_id': '{name}（{id}）',
    'ev.ack': '确认',
    'ev.ack_title': '确认此告警（可附备注）',
    'ev.ack_note': '备注（可选）',
    'ev.ack_send': '确认',
    'ev.ack_cancel': '取消',
    'ev.acking': '正在确认…',
    'ev.acked': '✓ 已由 {by} 于 {time} 确认',
    'ev.acked_note': '✓ 已由 {by} 于 {time} 确认：{note}',
    'ev.acked_unknown': '✓ 已确认',
    'ev.ack_failed': '未能确认：{why}',
    'ev.ack_of': '告警 #{id}',
    'ev.ack_event': '{alarm} 已由 {by} 确认',
    'ev.ack_event_note': '{alarm} 已由 {by} 确认：{note}',
    'ev.live': '实时画面',
    'ev.live_title': '在实时预览中播放此告警的通道',
    'ev.clip': '播放告警录像',
    'ev.clip_title': '播放此告警前后录制的录像',
    'ev.player_title': '告警录像：{where}，{time}',
    'ev.player_close': '关闭',
    'ev.player_error': '告警录像无法播放：{type} {detail}',
    'toast.alarm': '告警',
    'toast.repeat': '×{n}',
    'toast.events': '查看事件',
    'toast.close': '关闭提示',
    'ptz.up_left': '左上',
    'ptz.up_right': '右上',
    'ptz.down_left': '左下',
    'ptz.down_right': '右下',
    'ptz.speed': '速度',
    'ptz.speed_title': '云台转动、变倍、聚焦和光圈的速度',
    'ptz.focus': '聚焦',
    'ptz.focus_near': '近',
    'ptz.focus_far': '远',
    'ptz.iris': '光圈',
    'ptz.iris_open': '开大',
    'ptz.iris_close': '关小',
    'ptz.presets_of': '（{label}）',
    'ptz.home': '守望位',
    'ptz.home_title': '摄像机无人操作达到设定秒数后，自动回到指定的预置位',
    'ptz.home_preset': '预置位',
    'ptz.home_after': '无人操作多少秒后返回（0–86400）',
    'ptz.home_set': '启用',
    'ptz.home_off': '关闭',
    'ptz.home_on_done': '守望位已启用：无人操作 {s} 秒后回到预置位 {n}。',
    'ptz.home_off_done': '守望位已关闭。',
    'ptz.need_home': '请选择设备画面，并填写 1–255 的预置位和 0–86400 秒',
    'dev.ob.ss.learn': '自动学习',
    'dev.ob.ss.strict': '严格',
    'nav.recordings': '录像',
    'err.bad_plan': '录像计划无效',
    'err.being_written': '录像文件正在写入',
    'rec.tab.files': '录像文件',
    'rec.tab.plans': '录像计划',
    'rec.source': '通道或流',
    'rec.date': '日期',
    'rec.from': '从',
    'rec.to': '到',
    'rec.show': '查询',
    'rec.today': '今天',
    'rec.src.channels': '通道',
    'rec.src.streams': '流',
    'rec.src.stream': '流 {id}',
    'rec.src.recorded': '{label} · 有录像',
    'rec.src.none': '（尚无通道或流）',
    'rec.loading': '正在查询录像…',
    'rec.none': '{source} 在 {date} {from} 至 {to} 之间没有录像。',
    'rec.none_hint': 'gmv 只在以下情况录像：流的录像已开启（通过流接口，或配置文件中的 {config}）、告警录像，或通道的录像计划生效期间。请换一天、换个时段或换个通道。',
    'rec.count': '{source} 在 {date} {from} 至 {to} 之间有 {n} 段录像（其中告警录像 {alarms} 段），共录制 {length}。',
    'rec.count_one': '{source} 在 {date} {from} 至 {to} 之间有 1 段录像（其中告警录像 {alarms} 段），共录制 {length}。',
    'rec.truncated': '只显示了前 {n} 段：请缩短查询时段。',
    'rec.err.no_date': '请选择日期。',
    'rec.err.bad_time': '时间无效：请按“时:分”填写。',
    'rec.err.end_before_start': '结束时间早于开始时间：请选择更晚的结束时间（查询时段须在同一天内）。',
    'rec.err.no_source': '请选择通道或流（目前还没有：设备注册后，它的通道才会出现）。',
    'rec.err.unauthorized': '当前密钥已失效：请退出后重新登录。',
    'rec.err.forbidden': '当前密钥无权查看录像（角色权限不足）。',
    'rec.err.network': 'gmv 没有应答，无法读取录像，请重试。',
    'rec.err.load': '无法读取录像：',
    'rec.zoom_in': '放大（最小到 1 小时）',
    'rec.zoom_out': '缩小（最大到整个查询时段）',
    'rec.pan_back': '向前',
    'rec.pan_on': '向后',
    'rec.span': '当前显示 {from} – {to}（{length}）',
    'rec.legend.cont': '连续录像',
    'rec.legend.alarm': '告警录像',
    'rec.timeline_title': '点击即从该时刻开始播放',
    'rec.seg.cont': '录像 {start} – {end}：点击从该处播放',
    'rec.seg.alarm': '告警录像 {start} – {end}：点击播放',
    'rec.nothing_at': '{time} 没有录像：请点击有颜色的时段。',
    'rec.playing': '正在播放{kind}，从 {time} 开始',
    'rec.play_error': '录像无法播放：{type} {detail}',
    'rec.ended': '录像已播放完毕。',
    'rec.kind.cont': '连续录像',
    'rec.kind.alarm': '告警录像',
    'rec.kind.alarm_ids': '告警录像（{ids}）',
    'rec.kind.writing': '{kind}（正在写入）',
    'rec.files_title': '录像文件',
    'rec.h.start': '开始时间',
    'rec.h.length': '时长',
    'rec.h.size': '大小',
    'rec.h.kind': '类型',
    'rec.play_title': '播放此文件',
    'rec.download': '下载',
    'rec.download_title': '下载此文件（MP4）',
    'rec.delete': '删除',
    'rec.delete_title': '从 gmv 删除此文件（会先再次确认）',
    'rec.delete_writing': '正在写入的文件不能删除：请先停止录像',
    'rec.delete_confirm': '确定删除？',
    'rec.deleted': '已删除 {time} 的录像。',
    'rec.err.delete': '未删除：',
    'rec.err.delete_forbidden': '未删除：删除录像需要“操作员”或“管理员”角色的密钥（当前密钥是查看者的）。',
    'rec.err.delete_gone': '未删除：该文件已不存在（可能已被他人或自动清理删除）。',
    'rec.err.delete_writing': '未删除：该文件仍在写入，请先停止录像。',
    'rec.none_in_view': '当前显示的时段内没有文件：请缩小或移动时间轴。',
    'rec.rows_more': '当前时段共 {total} 个文件，只列出前 {n} 个：放大时间轴可查看其他文件。',
    'rec.export': '将 {from} – {to} 导出为一个 MP4',
    'rec.export_none': '导出（请先查询录像）',
    'rec.export_cancel': '取消导出',
    'rec.export_nothing': '{from} – {to} 之间没有可导出的录像',
    'rec.export.asking': '正在导出 {from} – {to}…',
    'rec.export.progress': '正在导出 {from} – {to}：已接收 {size}…',
    'rec.export.done': '已导出 {size}：{file}。',
    'rec.export.again': '再次保存',
    'rec.export.empty': 'gmv 返回了空文件。',
    'rec.export.nothing': '{from} 至 {to} 之间没有可导出的内容：这里没有已完成的连续录像（正在写入的文件和告警录像不导出）。',
    'rec.export.cancelled': '已取消导出。',
    'rec.export.network': '导出失败：gmv 没有应答。',
    'rec.export.failed': '导出失败：',
    'plan.intro': '录像计划按设定的星期和时段为通道录像：到时 gmv 会自动打开通道并录像，无需有人观看。',
    'plan.list_title': '录像计划',
    'plan.h.name': '名称',
    'plan.h.when': '录像时段',
    'plan.h.zone': '时区',
    'plan.h.keep': '录像保留',
    'plan.h.now': '当前',
    'plan.h.channels': '通道数',
    'plan.none': '尚无录像计划：请在下面添加。',
    'plan.unknown': '未知（见上方说明）。',
    'plan.range': '{days} {start}–{end}',
    'plan.days.all': '每天',
    'plan.days.run': '{from}至{to}',
    'plan.day.1': '周一',
    'plan.day.2': '周二',
    'plan.day.3': '周三',
    'plan.day.4': '周四',
    'plan.day.5': '周五',
    'plan.day.6': '周六',
    'plan.day.7': '周日',
    'plan.keep_days': '{n} 天',
    'plan.keep_default': '按自动清理规则',
    'plan.active': '生效中',
    'plan.inactive': '未到时段',
    'plan.edit': '修改',
    'plan.delete': '删除',
    'plan.delete_confirm': '确定删除？',
    'plan.deleted': '已删除录像计划 {name}：原来按它录像的通道不再有计划。',
    'plan.f.add_title': '添加录像计划',
    'plan.f.edit_title': '修改录像计划 {name}',
    'plan.f.name': '名称',
    'plan.f.zone': '时区',
    'plan.f.zone_hint': '填写固定的时差，例如 +08:00（北京时间）或 UTC；下面的时段按此时区计算。',
    'plan.f.keep': '录像保留天数',
    'plan.f.keep_default': '按自动清理规则',
    'plan.f.ranges': '星期和时段（结束时间 24:00 即午夜；跨午夜的时段请分成两段）',
    'plan.f.add_range': '添加时段',
    'plan.f.remove_range': '删除此时段',
    'plan.f.time_ph': '时:分',
    'plan.f.start': '开始时间（时:分）',
    'plan.f.end': '结束时间（时:分，最晚 24:00）',
    'plan.f.add': '添加计划',
    'plan.f.save': '保存',
    'plan.f.cancel': '取消',
    'plan.f.saving': '正在保存…',
    'plan.f.added': '已添加录像计划 {name}。',
    'plan.f.saved': '录像计划 {name} 已保存。',
    'plan.f.need_name': '请填写计划名称。',
    'plan.err.save': '未保存：',
    'plan.err.assign': '未设置：',
    'plan.err.delete': '未删除：',
    'plan.err.load': '无法读取录像计划：',
    'plan.err.sip_disabled': '录像计划用于设备通道，而此 gmv 未启用 SIP（{config} 为空），因此没有录像计划。',
    'plan.err.unreachable': 'gmv 没有应答，正在重试；显示的内容可能已过时。',
    'plan.why.forbidden': '此操作需要“操作员”或“管理员”角色的密钥（当前密钥是查看者的）。',
    'plan.why.unauthorized': '当前密钥已失效：请退出后重新登录。',
    'plan.why.exists': '已有同名计划：请在列表中修改它。',
    'plan.why.network': 'gmv 没有应答。',
    'plan.channels_title': '通道的录像计划',
    'plan.a.channel': '通道',
    'plan.a.plan': '计划',
    'plan.a.none': '（不使用计划）',
    'plan.a.no_channels': '（尚无通道）',
    'plan.a.set': '设置',
    'plan.a.saving': '正在设置…',
    'plan.a.done': '{channel} 现在按录像计划 {plan} 录像。',
    'plan.a.removed': '{channel} 现在不使用录像计划。',
    'plan.a.need_channel': '请先选择通道。',
    'plan.c.channel': '通道',
    'plan.c.plan': '计划',
    'plan.c.state': '状态',
    'plan.c.since': '状态开始于',
    'plan.c.error': '最近错误',
    'plan.c.none': '还没有通道使用录像计划：请在上面选择通道和计划。',
    'plan.c.remove': '取消计划',
    'plan.c.remove_title': '此通道不再使用录像计划（正在进行的计划录像会停止）',
    'plan.c.stream': '正在录像的流',
    'plan.state.idle': '等待中（不在计划时段内）',
    'plan.state.starting': '正在启动',
    'plan.state.recording': '录像中',
    'plan.state.retrying': '出错后重试中',
    'ret.title': '录像自动清理（只读）',
    'ret.intro': 'gmv 按以下规则自动删除最早的录像，规则在配置文件中设置：',
    'ret.rules': '规则',
    'ret.not_running': '此 gmv 未运行自动清理：录像会一直保留，直到被删除。',
    'ret.max_age': '最长保留',
    'ret.max_used': '最多占用空间',
    'ret.min_free': '至少保留空闲空间',
    'ret.interval': '检查间隔',
    'ret.no_limit': '不限',
    'ret.days': '{n} 天',
    'ret.every': '每 {n} 秒',
    'ret.plans': '自定保留天数的计划',
    'ret.plan_days': '{name}：{n} 天',
    'ret.last': '最近一次检查',
    'ret.never': '尚未检查（未设置规则，或首次检查还没到时间）',
    'ret.deleted': '该次删除',
    'ret.deleted_n': '{files} 个文件（{size}）：{why}',
    'ret.deleted_none': '无',
    'ret.why.max_age': '超过最长保留时间',
    'ret.why.max_used': '占用空间超过上限',
    'ret.why.min_free': '空闲空间不足',
    'ret.used': '录像占用',
    'ret.free': '空闲空间',
    'ret.free_of': '{free}（共 {total}）',
    'ret.error': '错误',
    'ret.totals': 'gmv 启动以来',
    'ret.totals_text': '检查 {passes} 次，删除 {files} 个文件（{size}）',
    // 视频源：RTSP 拉流代理与 RTMP 推流。
    'nav.sources': '视频源',
    'err.too_many': '已达到数量上限',
    'err.pull_unavailable': '此 gmv 的拉流代理不可用',
    'err.rtmp_disabled': '此 gmv 未启用 RTMP 推流接入',
    'src.intro': '只支持 RTSP 的摄像机，以及其他服务器的 RTMP、HTTP-FLV 或 HLS 地址，由 gmv 主动拉流（拉流代理）；编码器、OBS 和无人机通过 RTMP 向 gmv 推流。两者都和其他流一样可以播放、录像和级联上报。',
    'src.viewer_note': '当前密钥为观看者角色：可以查看和播放视频源。添加、修改、删除视频源，查找 ONVIF 摄像机、控制云台以及获取推流地址需要操作员或管理员密钥：请退出后用这样的密钥登录。',
    'src.updated': '更新于 {time}',
    'src.loading': '加载中…',
    'src.proxies_title': '拉流代理',
    'src.proxies_intro': 'gmv 连接每个视频源的地址（RTSP、RTMP、HTTP-FLV 或 HLS）并将其转为一路流：常驻拉流，或按需拉流（仅在有人观看时）。',
    'src.count': '{n} 个（上限 {max} 个）',
    'src.none': '还没有拉流代理：请在下方填写摄像机的 RTSP 地址（或 RTMP、HTTP-FLV、HLS 地址）来添加。',
    'src.none_viewer': '还没有拉流代理。',
    'src.h.name': '名称',
    'src.h.url': '源地址',
    'src.h.transport': '传输方式',
    'src.h.mode': '拉流方式',
    'src.h.status': '状态',
    'src.h.frames': '帧数',
    'src.h.codecs': '视频 / 音频',
    'src.stream_id': '流 ID',
    'src.mode.always': '常驻',
    'src.mode.on_demand_n': '按需（最后一位观众离开 {s} 秒后断开）',
    'src.status.starting': '启动中',
    'src.status.idle': '待机',
    'src.status.connecting': '连接中',
    'src.status.playing': '拉流中',
    'src.status.retrying': '重试中',
    'src.status.unauthorized': '认证失败',
    'src.status.stopped': '已停止',
    'src.idle_note': '按需拉流：当前无人观看，因此不连接摄像机；有人播放时才会连接。',
    'src.connecting_note': '正在连接摄像机…',
    'src.retry_in': '约 {s} 秒后重试。',
    'src.retry_now': '正在重新连接。',
    'src.retry_rule': '每次失败后 gmv 等待更久再重连（当前 {wait} 秒，逐次加倍，最长 30 秒）；已失败 {n} 次。',
    'src.dropped': '丢弃 {n} 帧',
    'src.connects': '已连接 {n} 次',
    'src.no_audio': '无音频',
    'src.play': '▶ 播放',
    'src.edit': '编辑',
    'src.delete': '删除',
    'src.delete_confirm': '再次点击以删除',
    'src.deleted': '已删除拉流代理 {name}，其流已结束。',
    'src.perr.raw': '引擎原文：{raw}',
    'src.perr.credentials': '摄像机拒绝了用户名或密码（{method} 返回 {code}）。',
    'src.phint.credentials': '请检查地址中的用户名和密码：编辑该代理，用正确的密码重新填写完整地址。',
    'src.perr.path': '摄像机不认识该地址的路径（{method} 返回 {code}）。',
    'src.phint.http_path': '请检查该服务器上流的路径（ZLMediaKit 和 SRS 为 {example}）。',
    'src.phint.path': '请根据摄像机的说明书或网页检查端口之后的路径（海康威视摄像机为 {example}）。',
    'src.perr.transport': '摄像机拒绝了该传输方式（{method} 返回 {code}）。',
    'src.phint.transport': '请编辑该代理，改用另一种传输方式（TCP 或 UDP）。',
    'src.perr.camera_failing': '摄像机返回错误（{method} 返回 {code}）。',
    'src.phint.camera_failing': '摄像机出现故障或连接数过多：请重启摄像机或减少其观看连接。',
    'src.perr.answered': '摄像机对 {method} 返回了 {code}。',
    'src.perr.refused': '该地址和端口上没有服务接受连接（连接被拒绝）。',
    'src.phint.refused': '请检查地址和端口（RTSP 默认 554，RTMP 默认 1935），确认视频源已开机且已启用该协议。',
    'src.perr.no_answer': '摄像机没有应答。',
    'src.phint.no_answer': '请确认摄像机已开机，且 gmv 能访问到它（地址、网络、防火墙）。',
    'src.perr.unreachable': 'gmv 无法到达摄像机所在的网络。',
    'src.phint.unreachable': '请检查地址以及 gmv 到摄像机之间的路由。',
    'src.perr.dns': '找不到摄像机的主机名。',
    'src.phint.dns': '请检查主机名，或改用摄像机的 IP 地址。',
    'src.perr.connect': 'gmv 无法连接摄像机。',
    'src.perr.slow': '摄像机在 {s} 秒内没有开始发送视频流。',
    'src.perr.codec': '该视频源没有 H.264 或 H.265 视频，它提供的是：',
    'src.phint.codec': '请将摄像机的视频编码设置为 H.264 或 H.265。',
    'src.perr.silent': '摄像机已 {s} 秒没有发送数据。',
    'src.perr.ended': '摄像机结束了会话。',
    'src.phint.silent': '摄像机可能重启或网络中断；gmv 会自动重新连接。',
    'src.perr.parameters': '摄像机的视频参数无法使用：',
    'src.perr.stream': 'gmv 无法打开该代理的流：',
    'src.phint.stream': 'gmv 稍后会自动重试。',
    'src.perr.other': '视频源出错：',
    'src.f.add_title': '添加拉流代理',
    'src.f.edit_title': '修改拉流代理 {name}',
    'src.f.name': '名称',
    'src.f.name_ph': '字母、数字、下划线或连字符',
    'src.f.url': '源地址：RTSP、RTMP、HTTP-FLV 或 HLS（含用户名和密码）',
    'src.f.url_ph': 'rtsp://用户名:密码@192.168.1.64:554/Streaming/Channels/101',
    'src.f.transport': '传输方式',
    'src.f.tcp': 'TCP（推荐）',
    'src.f.udp': 'UDP',
    'src.f.mode': '拉流方式',
    'src.f.always': '常驻：始终拉流',
    'src.f.on_demand': '按需：有人观看时才拉流',
    'src.f.idle': '无人观看多久后断开（秒）',
    'src.f.idle_ph': '30',
    'src.f.url_note': '用户名和密码写在地址里；gmv 会保存它们，但密码只显示为 ***。',
    'src.f.url_keep': '地址保持不变即保留原密码；如需修改地址，请连同密码完整填写。',
    'src.f.add': '添加',
    'src.f.save': '保存',
    'src.f.cancel': '取消',
    'src.f.saving': '正在保存…',
    'src.f.added': '已添加拉流代理 {name}：gmv 正在连接摄像机。',
    'src.f.saved': '已保存拉流代理 {name}：gmv 将按新设置重新连接摄像机。',
    'src.f.need_name': '请为该代理填写名称。',
    'src.f.need_url': '请填写视频源的地址（摄像机填写其 RTSP 地址）。',
    'src.f.retype_password': '地址中原密码的位置仍是 ***：请填写真实密码（或保持地址不变以保留原密码）。',
    'src.err.add': '未添加拉流代理：',
    'src.err.save': '修改未保存：',
    'src.err.delete': '未删除：',
    'src.why.forbidden': '当前密钥为观看者角色，此操作需要操作员或管理员密钥。',
    'src.why.unauthorized': '当前密钥已失效：请退出后重新登录。',
    'src.why.exists': '已存在名为 {name} 的拉流代理：请换一个名称，或编辑已有的那个。',
    'src.why.too_many': 'gmv 最多保存 {max} 个拉流代理：请先删除一个。',
    'src.why.gone': '拉流代理 {name} 已不存在（已被删除）。',
    'src.why.pull_unavailable': '此 gmv 的拉流代理不可用（原因见其启动日志）。',
    'src.why.network': 'gmv 没有应答，请重试。',
    'src.why.name': '名称只能包含字母、数字、下划线和连字符（最多 64 个）。',
    'src.why.url_long': '地址超过 {n} 个字符。',
    'src.why.scheme': 'gmv 不能拉取 {scheme} 地址，只能拉取 {list} 地址。',
    'src.why.scheme_push': '支持 RTMP 的编码器应改为向 gmv 推流：请在“RTMP 推流”下为其获取推流地址。',
    'src.why.udp_rtsp_only': '只有 {rtsp} 地址可以使用 UDP：请选择 TCP。',
    'src.why.rtmp_url': 'RTMP 地址须包含应用名和流名，例如 {example}。',
    'src.why.no_host': '地址中没有摄像机的主机（{rtsp} 之后为空）。',
    'src.why.url_invalid': '地址格式无效，正确的格式如 {example}',
    'src.why.idle': '无人观看的断开时间须为 1 到 3600 之间的整数秒。',
    'src.why.mode': '拉流方式只能是常驻或按需。',
    'src.why.transport': '传输方式只能是 TCP 或 UDP。',
    'src.list.proxies': '无法读取拉流代理：',
    'src.list.rtmp': '无法读取 RTMP 推流：',
    'src.list.unreachable': 'gmv 没有应答，正在重试；显示的内容可能已过时。',
    'src.rtmp_title': 'RTMP 推流',
    'src.rtmp_intro': '当前正在向 gmv 推流的编码器。推流地址带有令牌：请为每个编码器单独获取。',
    'src.rtmp.off': '此 gmv 未启用 RTMP 推流接入（配置项 {config}）：编码器无法推流。',
    'src.rtmp.none': '当前没有编码器在推流。请在下方获取推流地址并填入编码器。',
    'src.rtmp.none_viewer': '当前没有编码器在推流。',
    'src.rtmp.counters': 'RTMP 监听 {listen}：正在推流 {publishing} 路，累计推流 {published} 次，连接 {accepted} 次；已拒绝：令牌无效 {refused_token} 次、流名已被占用 {refused_exists} 次、繁忙 {refused_busy} 次、协议错误 {refused_protocol} 次；无法解析的消息 {demux_errors} 条。',
    'src.h.push_name': '流名称',
    'src.h.video': '视频',
    'src.h.audio': '音频',
    'src.h.kbps': '码率（千比特/秒）',
    'src.h.viewers': '观看数',
    'src.h.since': '已推流',
    'src.waiting': '等待第一帧',
    'src.for_s': '{s} 秒',
    'src.for_m': '{m} 分 {s} 秒',
    'src.for_h': '{h} 小时 {m} 分',
    'src.pub.title': '获取推流地址',
    'src.pub.stream': '流名称（应用/流）',
    'src.pub.days': '有效期（天）',
    'src.pub.submit': '获取推流地址',
    'src.pub.issuing': '正在向 gmv 申请…',
    'src.pub.issued': '{stream} 的推流地址，有效期 {days} 天：',
    'src.pub.url': '完整地址',
    'src.pub.url_hint': '用于 ffmpeg 和大多数编码器：在一个输入框中填写完整地址。',
    'src.pub.server': 'OBS：服务器',
    'src.pub.key': 'OBS：推流码',
    'src.pub.expires': '有效期至',
    'src.pub.stream_id': '流 ID',
    'src.pub.stream_id_hint': '编码器开始推流后会显示在上方列表中，可以播放',
    'src.pub.secret': '请妥善保管：在有效期内，任何持有该地址的人都可以推送这路流。',
    'src.pub.need_stream': '请按“应用/流”的格式填写流名称。',
    'src.pub.failed': '未能获取推流地址：',
    'src.pub.why.rtmp_off': '此 gmv 未启用 RTMP 推流接入（配置项 {config}）。',
    'src.pub.why.format': '流名称须为“应用/流”，只含一个斜杠，例如 {example}。',
    'src.pub.why.names': '应用名和流名只能包含字母、数字、下划线和连字符（各最多 64 个）。',
    'src.pub.why.days': '有效期须为 1 到 {max} 之间的整数天。',
    'err.camera_unauthorized': '摄像机拒绝了用户名或密码',
    'err.camera_unreachable': '摄像机没有应答',
    'err.camera_error': '摄像机返回了错误',
    'err.no_profile': '摄像机没有带流地址的码流',
    'err.no_stream_uri': '摄像机没有给出流地址',
    'err.not_onvif': '不是由 ONVIF 摄像机添加的',
    'err.no_ptz': '摄像机没有云台',
    'src.ov.title': 'ONVIF 摄像机',
    'src.ov.intro': '查找网络中的 ONVIF 摄像机，读取摄像机的码流，一步添加为拉流代理：gmv 会保存其用户名和密码，并可在上方列表中该代理所在行控制云台。',
    'src.ov.find_title': '查找摄像机',
    'src.ov.probe': '探测地址（可选）',
    'src.ov.probe_note': '留空：gmv 向整个本地网络发送探测（组播）。其他网段或路由器之后的摄像机收不到组播：请填写摄像机的 IP 地址（自动补上端口 3702）。',
    'src.ov.discover': '搜索摄像机',
    'src.ov.discovering_lan': '正在搜索本地网络…',
    'src.ov.discovering_at': '正在探测 {address}…',
    'src.ov.found': '{s} 秒内应答 {probed} 的摄像机：{n} 台。选用一台即可读取。',
    'src.ov.found_none': '{s} 秒内没有摄像机应答 {probed} 的探测。',
    'src.ov.none_hint_lan': '其他网段或路由器之后的摄像机收不到组播：请把摄像机的 IP 地址填为探测地址，或在“读取摄像机”中直接填写其设备地址。同时请确认摄像机已启用 ONVIF。',
    'src.ov.none_hint_at': '请检查地址，确认摄像机已开机、gmv 能访问到它，并已启用 ONVIF 及其设备发现（UDP 端口 3702）。也可以在下方直接读取其设备地址。',
    'src.ov.h.name': '名称',
    'src.ov.h.hardware': '型号',
    'src.ov.h.address': '设备地址',
    'src.ov.no_name': '（未提供名称）',
    'src.ov.no_address': '无可用地址',
    'src.ov.use': '选用',
    'src.ov.use_title': '读取这台摄像机：其地址会填入下方表单',
    'src.ov.added_as': '已添加为 {name}',
    'src.ov.read_title': '读取摄像机',
    'src.ov.device': '设备地址（ONVIF）',
    'src.ov.device_note': '用户名和密码为摄像机自身的账号：其网页登录账号，或在摄像机上为 ONVIF 添加的用户。只填 IP 地址也可以，gmv 会补全为 {example}。',
    'src.ov.user': '用户名',
    'src.ov.password': '密码',
    'src.ov.read': '读取',
    'src.ov.reading': '正在读取 {address} 的摄像机…',
    'src.ov.read_done': '已读取 {camera}：共 {n} 个码流。',
    'src.ov.stale': '地址、用户名或密码已修改：请重新读取摄像机。',
    'src.ov.need_device': '请填写摄像机的设备地址，或在上方选用搜索到的摄像机。',
    'src.ov.https': 'gmv 只通过 {http} 与摄像机进行 ONVIF 通信：请使用摄像机的 {http} 地址（ONVIF 通常在 80 端口）。',
    'src.ov.bad_device': '设备地址无效，正确的格式如 {example}。',
    'src.ov.info.camera': '摄像机',
    'src.ov.info.firmware': '固件版本',
    'src.ov.info.serial': '序列号',
    'src.ov.info.address': '设备地址',
    'src.ov.h.profile': '码流（配置文件）',
    'src.ov.h.encoding': '编码',
    'src.ov.h.resolution': '分辨率',
    'src.ov.h.ptz': '云台',
    'src.ov.h.stream_uri': '流地址',
    'src.ov.yes': '有',
    'src.ov.no': '无',
    'src.ov.no_uri': '无流地址：',
    'src.ov.add_title': '添加为拉流代理',
    'src.ov.name': '代理名称',
    'src.ov.profile': '码流',
    'src.ov.add_note': '添加时 gmv 会再次读取摄像机，把用户名和密码写入流地址（密码只显示为 ***），并保存它们用于云台控制。',
    'src.ov.add': '添加为拉流代理',
    'src.ov.adding': '正在添加…',
    'src.ov.added': '已从摄像机添加拉流代理 {name}：gmv 正在连接。',
    'src.ov.added_ptz': '列表中其所在行的“云台”按钮可控制摄像机转动。',
    'src.ov.need_stream': '请选择一个有流地址的码流。',
    'src.ov.err.discover': '未能探测摄像机：',
    'src.ov.err.read': '未能读取摄像机：',
    'src.ov.err.add': '未添加拉流代理：',
    'src.ov.err.ptz': '云台未转动：',
    'src.ov.err.presets': '未能读取预置位：',
    'src.ov.err.preset_go': '摄像机未转到预置位：',
    'src.ov.err.preset_save': '预置位未保存：',
    'src.ov.err.preset_delete': '预置位未删除：',
    'src.ov.why.unauthorized': '摄像机拒绝了用户名或密码。',
    'src.ov.fix.unauthorized': '请检查用户名和密码：应为摄像机的登录账号，或在摄像机上为 ONVIF 添加的用户（海康威视摄像机：配置 › 网络 › 高级配置 › 集成协议，启用 ONVIF 并在此添加用户）。多次输错可能导致该用户被暂时锁定。',
    'src.ov.fix.unauthorized_proxy': '添加该代理之后摄像机的密码已被修改：请删除该代理，再用新密码从摄像机重新添加。',
    'src.ov.why.refused': '{address} 上没有服务接受连接（连接被拒绝）。',
    'src.ov.why.timeout': '{address} 的摄像机在 {s} 秒内没有应答。',
    'src.ov.why.unreachable': '{address} 的摄像机没有应答：',
    'src.ov.fix.unreachable': '请检查地址和端口（ONVIF 通常在 80 端口，部分摄像机为 8000、8080 或 8899），确认摄像机已开机、gmv 能访问到它（网络、防火墙），并已在摄像机上启用 ONVIF。',
    'src.ov.why.camera_error': '摄像机返回了错误：',
    'src.ov.fix.camera_error': '该地址可能不是摄像机的 ONVIF 服务（通常为 {path}），或摄像机不支持该请求：请确认摄像机已启用 ONVIF，必要时升级固件。',
    'src.ov.fix.preset_error': '该预置位可能已在摄像机上被删除：已重新读取预置位列表。',
    'src.ov.why.busy': 'gmv 正在同时与 {n} 台摄像机通信：请稍后再试。',
    'src.ov.why.no_profile': '摄像机没有提供带流地址的码流（配置文件）。',
    'src.ov.fix.no_profile': '请重新读取摄像机并选择其他码流，并在摄像机网页上确认视频码流已启用。',
    'src.ov.why.no_stream_uri': '摄像机没有给出该码流的流地址：',
    'src.ov.fix.no_stream_uri': '请选择其他码流。',
    'src.ov.why.not_onvif': '该代理不是从 ONVIF 摄像机添加的：gmv 无法控制其云台。',
    'src.ov.why.no_ptz': '该码流没有云台配置：摄像机没有云台，或未在摄像机上为该码流配置云台。',
    'src.ov.why.probe_address': '探测地址应为 IP 地址加端口，例如 {example}。',
    'src.ov.why.forbidden': '当前密钥为观看者角色，此操作需要操作员或管理员密钥。',
    'src.ov.why.gone': '拉流代理 {name} 已不存在（已被删除）。',
    'src.ov.onvif_line': 'ONVIF 摄像机 {device} · 码流 {profile}',
    'src.ov.no_ptz_note': '· 无云台',
    'src.ov.ptz_button_title': '控制摄像机云台及预置位',
    'src.ov.ptz_title': '{name} 的云台',
    'src.ov.ptz_hint': '按住方向键或变倍键转动，松开即停止。',
    'src.ov.ptz_close': '收起',
    'src.ov.stop': '停止',
    'src.ov.preset_name_ph': '名称，例如 大门',
    'src.ov.preset_save': '保存当前位置',
    'src.ov.preset_save_title': '把摄像机当前的位置保存为新的预置位',
    'src.ov.need_preset_name': '请填写预置位名称（1 到 64 个字符）。',
    'src.ov.preset_went': '摄像机正在转到预置位 {name}。',
    'src.ov.preset_saved': '已保存预置位 {name}。',
    'src.ov.preset_deleted': '已删除预置位 {name}。',
    // 控制台用户（issue 28）：用户名和密码登录，修改自己的密码。
    'signin.user_intro': '请使用用户名和密码登录。',
    'signin.name': '用户名',
    'signin.password': '密码',
    'signin.key_button': '用密钥登录',
    'signin.key_show': '▸ 使用 API 密钥登录',
    'signin.key_hide': '▾ 使用 API 密钥登录',
    'signin.need_both': '请输入用户名和密码。',
    'signin.need_key': '请输入 API 密钥。',
    'signin.signing_in': '正在登录…',
    'signin.bad_credentials': '用户名或密码错误。',
    'signin.throttled': '此地址登录失败次数过多，请在 {wait} 后再试。',
    'signin.throttle_over': '现在可以重新登录了。',
    'signin.throttled_unknown': '此地址登录失败次数过多，请等几分钟再试。',
    'signin.refused': '登录被拒绝：{why}',
    'signin.note.ended': '您的登录已失效（已过期、密码已更改或用户已被删除），请重新登录。',
    'signin.note.signed_out': '您已退出登录。',
    'signin.note.password_changed': '密码已更改，请用新密码登录。',
    'nav.dashboard': '概览',
    'nav.users': '用户管理',
    'me.password': '修改密码',
    'me.title': '修改我的密码',
    'me.old': '当前密码',
    'me.new': '新密码',
    'me.repeat': '再次输入新密码',
    'me.rule': '长度 8 到 128 字节（字母或数字占 1 字节，汉字占 3 字节）。修改后控制台会用新密码为您重新登录。',
    'me.change': '修改密码',
    'me.close': '关闭',
    'me.role_key': '{role}，API 密钥',
    'me.need_old': '请输入当前密码。',
    'me.bad_length': '密码长度须为 8 到 128 字节，当前为 {n} 字节。',
    'me.mismatch': '两次输入的新密码不一致。',
    'me.changing': '正在修改…',
    'me.wrong_old': '当前密码不正确。',
    'me.refused': '未修改：{why}',
    'me.changed': '密码已修改，已用新密码重新登录。',
    'role.viewer': '查看员',
    'role.operator': '操作员',
    'role.admin': '管理员',
    'common.secs': '{s} 秒',
    'common.mins_secs': '{m} 分 {s} 秒',
    'common.days_hours': '{d} 天 {h} 小时',
    'common.hours_mins': '{h} 小时 {m} 分',
    'err.bad_credentials': '用户名或密码错误',
    'err.too_many_failures': '登录失败次数过多',
    'err.csrf': '被拒绝：该修改缺少本次登录的 CSRF 令牌（请重新加载页面）',
    'err.no_sub_stream': '该设备未设置子码流',
    'err.users_file': '无法读写用户文件',
    // 概览。
    'dash.nodes_title': '媒体节点',
    'dash.h.cpu': 'CPU',
    'dash.h.memory': '内存',
    'dash.errors_title': '最近的警告和错误',
    'dash.loading': '正在加载…',
    'dash.failed': '无法读取概览：{why}',
    'dash.node': '节点 {id}',
    'dash.up_for': '已运行 {time}',
    'dash.updated': '更新于 {time}',
    'dash.c.version': '版本',
    'dash.c.uptime': '运行时长',
    'dash.since': '自 {time} 起',
    'dash.c.cpu': 'CPU 占用',
    'dash.cpu_sub': '以单核计；共 {cores} 核（最高 {max} %）',
    'dash.c.memory': '内存',
    'dash.memory_sub': '本进程常驻内存',
    'dash.c.files': '打开的文件',
    'dash.files_sub': '本进程的文件和套接字',
    'dash.c.disk': '磁盘（数据目录）',
    'dash.disk_free': '剩余 {size}',
    'dash.disk_of': '共 {total}（已用 {pct} %）',
    'dash.disk_unknown': '未知',
    'dash.c.streams': '媒体流',
    'dash.streams_sub': 'HLS {hls} 路 · 录像中 {rec} 路',
    'dash.c.viewers': '观看数',
    'dash.viewers_sub': 'FLV、HLS、WebRTC 与 fMP4 播放端',
    'dash.c.webrtc': 'WebRTC 会话',
    'dash.webrtc_sub': '浏览器实时播放（含声音）',
    'dash.c.ingest': '接入码率',
    'dash.ingest_sub': '所有接入流合计',
    'dash.c.lost': '丢包',
    'dash.lost_sub': '共收到 {packets} 个包（丢包率 {pct} %）',
    'dash.foreign_sub': '{n} 个包被丢弃：并非来自该流的源',
    'dash.c.no_media': '无媒体的流',
    'dash.no_media_sub': '已打开但尚未收到媒体，详见“媒体流”',
    'dash.no_media_none': '所有流都在接收媒体',
    'dash.c.devices': '设备',
    'dash.devices_online': '在线 {n} 台',
    'dash.devices_sub': '离线 {offline} 台，共 {total} 台 · {channels} 个通道',
    'dash.devices_none': '本机未启用 SIP，无设备',
    'dash.no_nodes': '没有媒体节点：所有流都在本 gmv 中处理。',
    'dash.no_errors': 'gmv 启动以来没有警告或错误。',
    'dash.level.error': '错误',
    'dash.level.warn': '警告',
    // 用户管理（管理员）。
    'users.intro': '人员使用用户名和密码登录控制台。查看员可观看实时和录像视频；操作员还可控制云台、对讲、录像和确认告警；管理员还可设置设备、上级平台和用户。供程序使用的 API 密钥在配置文件中设置。',
    'users.h.name': '用户名',
    'users.h.role': '角色',
    'users.h.created': '创建时间',
    'users.add_title': '添加用户',
    'users.f.name': '用户名',
    'users.f.role': '角色',
    'users.f.password': '密码',
    'users.rules': '用户名为 1 到 32 个字母、数字或 _ - . ；密码为 8 到 128 字节（一个汉字占 3 字节）。',
    'users.add': '添加用户',
    'users.not_admin': '只有管理员可以管理用户，请以管理员身份登录。',
    'users.failed': '无法读取用户列表：{why}',
    'users.err.forbidden': '只有管理员可以管理用户。',
    'users.err.gone': '没有名为 {name} 的用户（可能已被删除）。',
    'users.err.exists': '已存在名为 {name} 的用户。',
    'users.err.refused': '未保存：{why}',
    'users.bad_password': '密码长度须为 8 到 128 字节（一个汉字占 3 字节）。',
    'users.bad_name': '用户名须为 1 到 32 个字母、数字或 _ - .（不能有空格）。',
    'users.counters': 'gmv 启动以来：登录成功 {ok} 次，失败 {failed} 次，因失败过多被拒绝 {throttled} 次。',
    'users.role_of': '{name} 的角色',
    'users.pw_set': '重设密码',
    'users.pw_cancel': '取消',
    'users.delete_title': '删除该用户（需再次确认）',
    'users.delete': '删除',
    'users.delete_confirm': '确定删除 {name}？',
    'users.delete_self_confirm': '确定删除您自己（{name}）？您将被退出登录',
    'users.you': '（您）',
    'users.pw_new': '新密码',
    'users.pw_for': '{name} 的新密码：',
    'users.pw_save': '设置',
    'users.saving': '正在保存…',
    'users.role_set': '{name} 的角色已改为{role}。',
    'users.pw_done': '已为 {name} 设置新密码：其登录已失效，需用新密码重新登录。',
    'users.deleted': '已删除 {name}。',
    'users.added': '已添加 {name}（{role}）。',
    // 子码流（辅码流）。
    'dev.ob.f.sub': '子码流（画面墙小窗口）',
    'dev.ob.sub.none': '无：各处都播放主码流',
    'dev.ob.sub.none_short': '无',
    'dev.ob.sub.stream': '子码流 (通用) a=stream:1',
    'dev.ob.sub.streamnumber': '子码流 (国标2022) a=streamnumber:1',
    'dev.ob.sub.streamprofile': '子码流 (大华) a=streamprofile:1',
    'dev.ob.sub.streamMode': '子码流 (水星/TP-LINK) a=streamMode:sub',
    'dev.ob.h.sub': '子码流',
    'dev.settings_sub': ' · {sub}',
    'wall.sub': '子码流',
    'wall.sub_title': '设备的子码流（小窗口）；全屏时播放主码流',
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
  for (const e of root.querySelectorAll('[data-say]')) if (e.sayFn) say(e, e.sayFn);
  for (const b of document.querySelectorAll('[data-lang]')) {
    b.classList.toggle('active', b.dataset.lang === lang);
    b.setAttribute('aria-pressed', String(b.dataset.lang === lang));
  }
  document.documentElement.lang = lang;
  document.title = t('app.title');
}

// Text built in code, kept in step with the language: `say(e, fn)` sets e's text to fn() (or
// its children, when fn gives an array) now and again at each switch (applyI18n). Whatever
// writes such an element afterwards goes through say() too.
function say(e, fn) {
  e.sayFn = fn;
  e.setAttribute('data-say', '');
  const v = fn();
  if (Array.isArray(v)) e.replaceChildren(...v);
  else e.textContent = v;
  return e;
}
// The same for an element's text from a key (`sayKey(e, '')` empties it).
const sayKey = (e, key, params = {}) => say(e, () => (key ? t(key, params) : ''));
// The same, its parameters being configuration names or values: shown as <code>, not translated.
const CODE_MARK = '\u0001';
const sayCode = (e, key, params) => say(e, () => t(key, Object.fromEntries(Object.keys(params).map((k) => [k, `${CODE_MARK}${k}${CODE_MARK}`])))
  .split(CODE_MARK).map((part, i) => (i % 2 ? el('code', {}, params[part]) : part)));

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

// No answer at all from gmv (the network, or gmv down).
class NetworkError extends Error {}

// What an operator should read instead of a code: the code's words (`err.CODE`), else the
// status, then gmv's own message (the engine's words, as they are).
function readable(err) {
  if (err instanceof ApiError) {
    const key = `err.${err.code}`;
    const what = err.code && key in I18N.en ? t(key, { status: err.status }) : t('err.status', { status: err.status });
    return err.message ? t('err.detail', { what, detail: err.message }) : what;
  }
  if (err instanceof NetworkError) return t('err.detail', { what: t('err.network'), detail: err.message });
  return String(err && err.message || err);
}

// Who is signed in, as GET /api/session says it: {name, role, kind: 'user' | 'api_key', csrf}
// (a user's session lives in an HTTP-only cookie the browser sends by itself; `csrf` goes with
// every change), or null while unknown.
let me = null;
// A password being changed: the old session ends before the new one begins, and an answer
// of 401 meanwhile is no sign that the session ended.
let renewing = false;
let sessionEnding = false;

// The credential of a request: the API key in a header, or (a user: the cookie goes by
// itself) the session's CSRF token on a change.
function authHeaders(method = 'GET') {
  if (apiKey) return { Authorization: `Bearer ${apiKey}` };
  if (me && me.csrf && method !== 'GET' && method !== 'HEAD') return { 'X-CSRF-Token': me.csrf };
  return {};
}

// `/api/session` itself answers 401 to a wrong password or no session: no session ended there.
const isSessionPath = (path) => path === '/api/session' || path.startsWith('/api/session/');

async function api(method, path, body, again = false) {
  const headers = authHeaders(method);
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let r;
  try {
    r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new NetworkError(String(err && err.message || err));
  }
  let v = null;
  try { v = await r.json(); } catch (_) { /* not JSON */ }
  if (!r.ok) {
    const code = v && (v.code || v.error);
    // Another tab signed in again meanwhile (a new cookie, a new token): asked once more with it.
    if (r.status === 403 && code === 'csrf' && !again && me && me.kind === 'user' && await refreshMe()) return api(method, path, body, true);
    if (r.status === 401 && !isSessionPath(path)) sessionEnded();
    throw new ApiError(r.status, code, v && v.message);
  }
  return v;
}

// ---- sign in ----
// People sign in with a user name and password (a session cookie, HTTP-only: the page never
// sees it, nothing is kept in storage); machines and the first set-up with an API key, kept in
// this tab's session storage. Signing out, or a session that ended (expired, its password
// changed, its user removed), loads the page again on the sign-in screen, which says why.

const SIGNIN_NOTE_STORE = 'gmv-signin-note';
// Whether the API key part of the sign-in screen is open: as it was left in this browser;
// at first open (a new site's only way in is the admin key), closed once a person signed in.
const KEY_PART_STORE = 'gmv-signin-key';
const roleText = (role) => (`role.${role}` in I18N.en ? t(`role.${role}`) : String(role));

function storeGet(storage, key) {
  try { return storage.getItem(key); } catch (_) { return null; }
}
function storeSet(storage, key, value) {
  try { if (value === null) storage.removeItem(key); else storage.setItem(key, value); } catch (_) { /* storage disabled */ }
}

// Back to the sign-in screen (the page loaded again: no player, timer or stream left) saying
// why: `note` of `signin.note.*`.
function backToSignIn(note) {
  storeSet(sessionStorage, SIGNIN_NOTE_STORE, JSON.stringify({ note, name: me && me.kind === 'user' ? me.name : '' }));
  location.reload();
}

// A user's request answered 401: the session ended (a key's 401 is said where it happened).
// A request sent with the cookie of a moment ago (a password just changed here, another tab
// signed in again) is answered 401 though a session goes on: asked once more before leaving.
async function sessionEnded() {
  if (renewing || sessionEnding || !me || me.kind !== 'user' || $('#app').hidden) return;
  sessionEnding = true;
  let status = 0;
  let v = null;
  try {
    const r = await fetch('/api/session');
    status = r.status;
    v = await r.json();
  } catch (_) { /* no answer: not known to have ended */ }
  if (status === 401 && !renewing) { backToSignIn('ended'); return; }
  if (status === 200 && v && v.kind === 'user') {
    Object.assign(me, { name: v.name, role: v.role, csrf: v.csrf || me.csrf });
    renderMe();
  }
  sessionEnding = false;
}

// Who this is (GET /api/session), shown in the header; the CSRF token renewed. False when
// gmv did not say.
async function refreshMe() {
  try {
    const v = await api('GET', '/api/session');
    me = { name: v.name, role: v.role, kind: v.kind, csrf: v.csrf || null };
  } catch (_) {
    return false;
  }
  renderMe();
  return true;
}

function renderMe() {
  const box = $('#whoami');
  if (!me) { sayKey(box, ''); } else {
    say(box, () => [el('span', { class: 'data who' }, me.name), ' ', el('span', { class: 'role' }, me.kind === 'user' ? roleText(me.role) : t('me.role_key', { role: roleText(me.role) }))]);
  }
  $('#password-open').hidden = !(me && me.kind === 'user');
  $('#nav-users-button').hidden = !(me && me.role === 'admin');
  if (me) {
    isAdmin = me.role === 'admin';
    renderProvisionAccess();
    if (devices.total !== undefined) renderDevices();
  }
}

// Into the console, on `view`.
function enterApp(view) {
  $('#signin').hidden = true;
  $('#app').hidden = false;
  renderMe();
  if (!me) probeRole();
  show(view);
  followEvents();
}

async function signIn(key) {
  apiKey = key;
  try {
    await api('GET', '/api/devices');
  } catch (err) {
    apiKey = '';
    throw err;
  }
  sessionStorage.setItem(KEY_STORE, key);
  storeSet(localStorage, KEY_PART_STORE, 'open');
  me = null;
  enterApp('devices');
  // The key's name and role, for the header (its role is probed meanwhile).
  await refreshMe();
}

// A person: name and password; the answer sets the session cookie and gives the CSRF token.
async function signInUser(name, password) {
  const v = await api('POST', '/api/session', { name, password });
  apiKey = '';
  storeSet(sessionStorage, KEY_STORE, null);
  me = { name: v.name, role: v.role, kind: 'user', csrf: v.csrf };
  return v;
}

// Whether this key is an admin's (only an admin may read the config): true, false, or null
// while unknown (or when gmv did not say: the form is offered and the API answers).
let isAdmin = null;
async function probeRole() {
  try {
    await api('GET', '/api/config');
    isAdmin = true;
  } catch (err) {
    isAdmin = err instanceof ApiError && err.status === 403 ? false : null;
  }
  renderProvisionAccess();
  if (devices.total !== undefined) renderDevices();
}

// "4 min 10 s" in the language in force.
function waitText(s) {
  s = Math.max(0, Math.ceil(s));
  return s < 60 ? t('common.secs', { s }) : t('common.mins_secs', { m: Math.floor(s / 60), s: s % 60 });
}

// Sign-ins refused from this address until then (429): said with the time left, counting down.
let throttledUntil = 0;
let throttleTimer = null;
function sayThrottled(box, seconds) {
  throttledUntil = Date.now() + seconds * 1000;
  clearInterval(throttleTimer);
  const left = () => (throttledUntil - Date.now()) / 1000;
  say(box, () => (left() > 0 ? t('signin.throttled', { wait: waitText(left()) }) : t('signin.throttle_over')));
  throttleTimer = setInterval(() => {
    say(box, box.sayFn);
    if (left() <= 0) clearInterval(throttleTimer);
  }, 1000);
}

// Why a sign-in failed, on the screen.
function signInProblem(err, box) {
  clearInterval(throttleTimer);
  if (err instanceof ApiError && err.status === 401) { sayKey(box, 'signin.bad_credentials'); return; }
  if (err instanceof ApiError && err.status === 429) {
    const s = Number((/(\d+)\s*s\b/.exec(err.message || '') || [])[1]);
    if (s > 0) sayThrottled(box, s); else sayKey(box, 'signin.throttled_unknown');
    return;
  }
  if (err instanceof ApiError && err.status === 400) { say(box, () => t('signin.refused', { why: err.message || err.status })); return; }
  say(box, () => readable(err));
}

$('#signin-user-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const box = $('#signin-user-error');
  const name = $('#signin-name').value.trim();
  const password = $('#signin-password').value;
  clearInterval(throttleTimer);
  $('#signin-note').hidden = true;
  if (!name || !password) {
    sayKey(box, 'signin.need_both');
    (name ? $('#signin-password') : $('#signin-name')).focus();
    return;
  }
  sayKey(box, 'signin.signing_in');
  $('#signin-user-button').disabled = true;
  try {
    await signInUser(name, password);
    $('#signin-password').value = '';
    sayKey(box, '');
    $('#signin-note').hidden = true;
    storeSet(localStorage, KEY_PART_STORE, 'closed');
    enterApp('dashboard');
  } catch (err) {
    signInProblem(err, box);
    $('#signin-password').select();
  } finally {
    $('#signin-user-button').disabled = false;
  }
});

$('#signin-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  sayKey($('#signin-error'), '');
  const key = $('#key').value.trim();
  if (!key) { sayKey($('#signin-error'), 'signin.need_key'); return; }
  try {
    await signIn(key);
  } catch (err) {
    say($('#signin-error'), () => (err.status === 401 ? t('signin.bad_key') : readable(err)));
  }
});

function setKeyPart(open) {
  $('#signin-form').hidden = !open;
  const toggle = $('#signin-key-toggle');
  toggle.setAttribute('aria-expanded', String(open));
  sayKey(toggle, open ? 'signin.key_hide' : 'signin.key_show');
}
$('#signin-key-toggle').addEventListener('click', () => {
  const open = $('#signin-form').hidden;
  storeSet(localStorage, KEY_PART_STORE, open ? 'open' : 'closed');
  setKeyPart(open);
  (open ? $('#key') : $('#signin-name')).focus();
});

// The sign-in screen, saying why it is shown again (signed out, the session ended...).
function showSignIn() {
  let note = null;
  try { note = JSON.parse(storeGet(sessionStorage, SIGNIN_NOTE_STORE) || 'null'); } catch (_) { /* none */ }
  storeSet(sessionStorage, SIGNIN_NOTE_STORE, null);
  setKeyPart(storeGet(localStorage, KEY_PART_STORE) !== 'closed');
  const box = $('#signin-note');
  box.hidden = !(note && note.note);
  if (note && note.note) sayKey(box, `signin.note.${note.note}`);
  if (note && note.name) $('#signin-name').value = note.name;
  $('#app').hidden = true;
  $('#signin').hidden = false;
  (note && note.name ? $('#signin-password') : $('#signin-name')).focus();
}

// At load: the key of this tab, else a user's session cookie (GET /api/session), else the
// sign-in screen.
async function start() {
  if (apiKey) {
    try {
      await signIn(apiKey);
      return;
    } catch (_) {
      storeSet(sessionStorage, KEY_STORE, null);
    }
  }
  try {
    const v = await api('GET', '/api/session');
    if (v && v.kind === 'user') {
      me = { name: v.name, role: v.role, kind: 'user', csrf: v.csrf };
      enterApp('dashboard');
      return;
    }
  } catch (_) { /* not signed in */ }
  showSignIn();
}

$('#signout').addEventListener('click', async () => {
  if (me && me.kind === 'user') {
    $('#signout').disabled = true;
    try { await api('DELETE', '/api/session'); } catch (_) { /* the page loads again all the same */ }
    backToSignIn('signed_out');
    return;
  }
  storeSet(sessionStorage, KEY_STORE, null);
  backToSignIn('signed_out');
});

// ---- one's own password (a user's) ----

function passwordStatus(cls, key, params = {}) {
  const box = $('#pw-status');
  box.className = `status ${cls}`;
  if (typeof key === 'function') say(box, key); else sayKey(box, key, params);
}

function openPasswordPanel(open) {
  $('#password-panel').hidden = !open;
  $('#password-open').setAttribute('aria-expanded', String(open));
  $('#password-open').classList.toggle('active', open);
  if (open) {
    for (const id of ['#pw-old', '#pw-new', '#pw-repeat']) $(id).value = '';
    passwordStatus('', '');
    $('#pw-old').focus();
  }
}
$('#password-open').addEventListener('click', () => openPasswordPanel($('#password-panel').hidden));
$('#pw-cancel').addEventListener('click', () => openPasswordPanel(false));

const utf8Bytes = (s) => new TextEncoder().encode(s).length;

$('#password-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const old = $('#pw-old').value;
  const next = $('#pw-new').value;
  if (!old) { passwordStatus('error', 'me.need_old'); $('#pw-old').focus(); return; }
  const n = utf8Bytes(next);
  if (n < 8 || n > 128) { passwordStatus('error', 'me.bad_length', { n }); $('#pw-new').focus(); return; }
  if (next !== $('#pw-repeat').value) { passwordStatus('error', 'me.mismatch'); $('#pw-repeat').focus(); return; }
  passwordStatus('muted', 'me.changing');
  $('#pw-submit').disabled = true;
  renewing = true;
  try {
    try {
      await api('PUT', '/api/session/password', { old, new: next });
    } catch (err) {
      if (err instanceof ApiError && err.status === 403 && err.code === 'bad_credentials') { passwordStatus('error', 'me.wrong_old'); $('#pw-old').select(); return; }
      if (err instanceof ApiError && err.status === 400) { passwordStatus('error', () => t('me.refused', { why: err.message || err.status })); return; }
      if (err instanceof ApiError && err.status === 401) { renewing = false; sessionEnded(); return; }
      passwordStatus('error', () => readable(err));
      return;
    }
    // Changed: the session of the old password ended; a new one with the new password.
    try {
      await signInUser(me.name, next);
    } catch (_) {
      backToSignIn('password_changed');
      return;
    }
    renderMe();
    for (const id of ['#pw-old', '#pw-new', '#pw-repeat']) $(id).value = '';
    passwordStatus('ok', 'me.changed');
  } finally {
    renewing = false;
    $('#pw-submit').disabled = false;
  }
});

// ---- views ----

let refreshTimer = null;
// Tiles go on playing for this long while another view is shown (a look at the events and
// back does not restart them); past it they unload (no bandwidth for pictures nobody sees) and
// load again on return.
const TILES_HIDDEN_KEEP_MS = 120000;
let tilesHiddenTimer = null;
function show(view) {
  for (const b of document.querySelectorAll('nav button')) b.classList.toggle('active', b.dataset.view === view);
  for (const v of document.querySelectorAll('.view')) v.hidden = v.id !== `view-${view}`;
  clearInterval(refreshTimer);
  clearTimeout(tilesHiddenTimer);
  tilesHiddenTimer = null;
  if (view === 'wall') {
    placeTree(true);
    loadDevices();
    resumeTiles();
  } else {
    tilesHiddenTimer = setTimeout(suspendTiles, TILES_HIDDEN_KEEP_MS);
  }
  if (view !== 'playback') stopPlayback();
  if (view !== 'events') stopClip();
  if (view !== 'recordings') leaveRecordings();
  if (view === 'recordings') openRecordings();
  if (view === 'devices') {
    placeTree(false);
    loadDevices();
    if (ob.open) loadOnboarding();
  }
  if (view === 'events') openEvents();
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
  // The dashboard refreshes while shown only (one request at a time).
  if (view === 'dashboard') startDashboard();
  else stopDashboard();
  if (view === 'users') openUsers();
  // Refreshed while shown only (its own timer: one request at a time).
  if (view === 'upstreams') startUpstreams();
  else stopUpstreams();
  if (view === 'sources') startSources();
  else stopSources();
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
/// Row heights of the virtual tree (px, the least a row takes), and rows drawn beyond the
/// visible ones. A row whose text does not fit its width wraps and grows: its height is
/// measured once drawn (at phone width, where most rows wrap, from a taller estimate).
const ROW_PX = { device: 40, channel: 46, details: 250, note: 30 };
const ROW_PX_NARROW = { device: 62, channel: 64, details: 420, note: 30 };
const NARROW_PX = 640;
const OVERSCAN_ROWS = 10;
/// Heights measured at the present width (and language), by row.
const rowHeights = new Map();
const rowKey = (r) => (r.kind === 'channel' ? `c:${r.d.device_id}:${r.c.device_id}` : `${r.kind}:${r.d.device_id}`);
const rowPx = (r) => rowHeights.get(rowKey(r)) ?? (window.innerWidth <= NARROW_PX ? ROW_PX_NARROW : ROW_PX)[r.kind];
/// Names the console knows, by device or channel id (for the events, the toasts, the settings).
const names = new Map();
function learnDevice(d) {
  const name = (d.settings && d.settings.name) || (d.info && d.info.device_name);
  if (name && name !== d.device_id) names.set(d.device_id, name);
}

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
    subSettings.clear();
    for (const d of found) learnDevice(d);
    const { sessions } = await api('GET', '/api/sessions');
    if (load !== devicesLoad) return;
    await Promise.all(sessions.filter((s) => s.kind === 'live').slice(0, COVERS_MAX).map(async (s) => {
      if (covers.has(s.channel_id)) return;
      try {
        const tok = await api('POST', '/api/play-tokens', { stream_id: s.stream_id });
        covers.set(s.channel_id, `/cover/${s.stream_id}.jpg?token=${tok.token}`);
      } catch (_) { /* no thumbnail */ }
    }));
    if (load !== devicesLoad) return;
    renderDevices();
    // A site no camera has registered at yet: how to connect one, open (unless closed).
    if (total === 0 && !q && !online && !ob.open && !ob.closedByUser) setOnboarding(true);
    if (ob.open) renderProvisioned();
  } catch (err) {
    if (load !== devicesLoad) return;
    $('#device-tree').replaceChildren(say(el('div', { class: 'error' }), () => readable(err)));
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
  for (const c of channels) if (c.name && c.name !== c.device_id) names.set(c.device_id, c.name);
  renderDevices();
}

// A device came online or went offline (the events stream): its row and its channels' dots
// follow; a device not in the list (a new one) has the list asked again. Redrawn at most every
// TREE_FOLLOW_MS (a site's cameras registering after a restart come in hundreds).
const TREE_FOLLOW_MS = 300;
let treeFollowTimer = null;
let treeFollowReload = false;
function deviceState(deviceId, online) {
  const d = devices.find((x) => x.device_id === deviceId);
  if (d && d.online === online) return;
  if (d) d.online = online; else treeFollowReload = true;
  if (treeFollowTimer) return;
  treeFollowTimer = setTimeout(() => {
    treeFollowTimer = null;
    const shown = !$('#view-devices').hidden || !$('#view-wall').hidden;
    if (treeFollowReload && shown) loadDevices(); else renderDevices();
    treeFollowReload = false;
  }, TREE_FOLLOW_MS);
}

// The tree as flat rows of known heights: only those in view are in the page.
let rows = [];
let offsets = [];
let heights = [];
function renderDevices() {
  rows = [];
  for (const d of devices) {
    rows.push({ kind: 'device', d });
    if (openDetails.has(d.device_id)) rows.push({ kind: 'details', d });
    if (!isExpanded(d)) continue;
    const channels = channelsOf.get(d.device_id);
    if (channels === undefined) loadChannels(d);
    if (!channels) rows.push({ kind: 'note', d, text: 'dev.asking_channels' });
    else for (const c of channels) rows.push({ kind: 'channel', d, c });
  }
  layoutRows();
  sayKey($('#device-count'), 'dev.count', { n: devices.length, total: devices.total ?? devices.length });
  drawVisibleRows();
}

function layoutRows() {
  offsets = [];
  heights = rows.map(rowPx);
  let y = 0;
  for (const h of heights) {
    offsets.push(y);
    y += h;
  }
  $('#tree-space').style.height = `${y}px`;
}

// Draws the rows in view; a row that took another height than reckoned (it wrapped) is
// measured, and the rows laid out and drawn again with it (once).
function drawVisibleRows(again = false) {
  const scroller = $('#tree-scroll');
  const top = scroller.scrollTop;
  const bottom = top + scroller.clientHeight;
  let lo = 0;
  let hi = rows.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (offsets[mid] + heights[mid] <= top) lo = mid + 1; else hi = mid;
  }
  const first = Math.max(0, lo - OVERSCAN_ROWS);
  const drawn = [];
  for (let i = first; i < rows.length && (i < lo || offsets[i] < bottom || i < lo + OVERSCAN_ROWS); i++) {
    const node = rowNode(rows[i]);
    node.style.top = `${offsets[i]}px`;
    node.style.minHeight = `${ROW_PX[rows[i].kind]}px`;
    drawn.push([i, node]);
  }
  $('#device-tree').replaceChildren(...drawn.map(([, node]) => node));
  if (scroller.offsetParent === null) return; // not shown: measured when it is
  let changed = false;
  for (const [i, node] of drawn) {
    const h = node.offsetHeight;
    if (h && h !== heights[i]) {
      rowHeights.set(rowKey(rows[i]), h);
      changed = true;
    }
  }
  if (changed && !again) {
    layoutRows();
    drawVisibleRows(true);
  }
}

function rowNode(r) {
  const d = r.d;
  if (r.kind === 'device') {
    const info = [d.info.manufacturer, d.info.model].filter(Boolean).join(' ');
    const open = isExpanded(d);
    const name = names.get(d.device_id);
    return el('div', { class: 'row device', dataset: { testid: `device-${d.device_id}` } },
      el('button', { class: 'toggle', title: open ? t('dev.hide_channels') : t('dev.show_channels'), dataset: { testid: `expand-${d.device_id}` }, onclick: () => {
        if (open) { expanded.delete(d.device_id); collapsed.add(d.device_id); } else { collapsed.delete(d.device_id); expanded.add(d.device_id); }
        renderDevices();
      } }, open ? '▾' : '▸'), ' ',
      el('span', { class: `dot ${d.online ? 'on' : ''}`, title: d.online ? t('dev.online') : t('dev.offline'), dataset: { testid: `device-state-${d.device_id}` } }), ' ',
      // The name first (what operators know a camera by), the id second.
      ...(name ? [el('span', { class: 'data dev-name' }, name), ' '] : []),
      el(name ? 'span' : 'strong', { class: name ? 'device-id muted' : 'device-id', title: t('dev.details'), onclick: () => {
        if (openDetails.has(d.device_id)) openDetails.delete(d.device_id); else openDetails.add(d.device_id);
        renderDevices();
      } }, d.device_id), ' ',
      el('span', { class: 'muted info' }, [info, d.online ? t('dev.online') : t('dev.offline'), t('dev.channels', { n: d.channel_count }), d.last_error].filter(Boolean).join(' · ')), ' ',
      el('button', { class: 'sync', title: t('dev.sync_title'), onclick: async () => { try { await api('POST', `/api/devices/${d.device_id}/sync`); } catch (err) { alert(readable(err)); } } }, t('dev.sync')));
  }
  if (r.kind === 'details') {
    const box = el('div', { class: 'row details', dataset: { testid: `details-${d.device_id}` } });
    fillDetails(box, d);
    return box;
  }
  if (r.kind === 'note') return el('div', { class: 'row note muted' }, t(r.text));
  const c = r.c;
  const cover = covers.get(c.device_id);
  const label = c.name || c.device_id;
  // Beside the wall a click plays the channel in the selected tile; in Devices its ▶ plays it in
  // the next free one. Either way it can be dragged onto a tile.
  const play = () => (treeInLive ? playFromTree(d.device_id, c.device_id, label) : wallPlay(d.device_id, c.device_id, label));
  const attrs = { class: 'row channel', draggable: 'true', dataset: { testid: `channel-${c.device_id}` }, ondragstart: (e) => dragChannel(e, d.device_id, c.device_id, label) };
  if (treeInLive) Object.assign(attrs, { title: t('wall.tree_hint'), onclick: (e) => { if (!e.target.closest('button')) play(); } });
  // A channel is on only while its device is: an offline device's channels are not green.
  const on = d.online && c.status === 'ON';
  return el('div', attrs,
    cover ? el('img', { class: 'cover', src: cover, alt: '', loading: 'lazy', draggable: 'false' }) : el('span', { class: 'cover' }),
    el('span', { class: `dot ${on ? 'on' : ''}`, dataset: { testid: `channel-state-${c.device_id}` } }),
    el('span', { class: 'ch-text' }, el('span', { class: 'data' }, label), el('span', { class: 'muted' }, c.device_id)),
    el('button', { title: t('common.play_in_wall'), dataset: { testid: `play-${c.device_id}` }, onclick: play }, '▶'));
}

// DeviceInfo, the last DeviceStatus (and a button to ask again), subscriptions, position.
function fillDetails(box, d) {
  const row = (k, v) => el('div', {}, el('span', { class: 'muted' }, t('common.field', { name: t(`dev.f.${k}`) })), v === undefined || v === null || v === '' ? '—' : String(v));
  const status = d.status ? t('dev.status', { online: d.status.online, status: d.status.status, encode: d.status.encode, record: d.status.record, clock: d.status.device_time }) : null;
  const subKind = (k) => (`dev.sub.${k}` in I18N.en ? t(`dev.sub.${k}`) : k);
  const subs = (d.subscriptions || []).map((s) => (s.active ? subKind(s.kind) : t('dev.sub.inactive', { kind: subKind(s.kind) }))).join(t('common.list_sep'));
  const pos = d.position ? t('dev.position', { lat: d.position.latitude, lon: d.position.longitude, time: d.position.time }) : null;
  box.replaceChildren(
    row('name', d.info.device_name), row('manufacturer', d.info.manufacturer), row('model', d.info.model),
    row('firmware', d.info.firmware), row('address', d.addr), row('gb', d.gb_version ? t('dev.gb_ver', { v: d.gb_version }) : t('dev.gb_2016')),
    row('status', status), row('subscriptions', subs), row('position', pos), row('last_error', d.last_error),
    row('settings', d.settings ? settingsText(d.settings) : null),
    el('div', { class: 'buttons' },
      el('button', { dataset: { testid: `status-${d.device_id}` }, onclick: async (e) => {
        const button = e.currentTarget;
        sayKey(button, 'dev.asking');
        try { await api('GET', `/api/devices/${d.device_id}/status`); await loadDevices(); } catch (err) { say(button, () => readable(err)); }
      } }, t('dev.ask_status')),
      // Its settings in gmv (name, password, transport, SSRC check): an admin's.
      ...(isAdmin === false ? [] : [el('button', { dataset: { testid: `edit-${d.device_id}` }, onclick: () => editDevice(d.device_id, d.settings) }, t('dev.edit'))])));
}

// A device's settings in gmv, in words.
function settingsText(st) {
  return t('dev.settings', {
    name: st.name || '—',
    password: st.own_password ? t('dev.ob.pw.own') : t('dev.ob.pw.site'),
    transport: st.transport ? transportText(st.transport) : t('dev.ob.t.default'),
    ssrc: st.ssrc_check ? ssrcText(st.ssrc_check) : t('dev.ob.t.default'),
  }) + (st.sub_stream ? t('dev.settings_sub', { sub: subStreamText(st.sub_stream) }) : '');
}
// How the device is asked for its sub-stream, as operators know it (the maker, the SDP line).
const subStreamText = (v) => (v && `dev.ob.sub.${v}` in I18N.en ? t(`dev.ob.sub.${v}`) : v || t('dev.ob.sub.none'));
const transportText = (v) => (`dev.ob.t.${v}` in I18N.en ? t(`dev.ob.t.${v}`) : v);
const ssrcText = (v) => (`dev.ob.ss.${v}` in I18N.en ? t(`dev.ob.ss.${v}`) : v);

let searchTimer = null;
$('#device-filter').addEventListener('input', () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => { channelsLoad += 1; channelsOf.clear(); loadDevices(); }, 250);
});
$('#online-only').addEventListener('change', loadDevices);
$('#tree-scroll').addEventListener('scroll', () => drawVisibleRows());
// The tree is drawn again in the new language (once there is one), and at a new width: its
// rows wrap otherwise.
onLanguage(() => { rowHeights.clear(); if (devices.total !== undefined) renderDevices(); });
let resizeTimer = null;
window.addEventListener('resize', () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => { rowHeights.clear(); if (devices.total !== undefined) renderDevices(); }, 150);
});

// ---- onboarding (接入信息): how a camera connects, and devices set up here ----
// What a camera's GB/T 28181 page asks for, from /api/sip/connect-info, each value with a copy
// button; an admin also sets devices up (name, own password, video transport, SSRC check)
// through /api/devices, before or after they register, and changes or removes them.

const REMOVE_ARMED_MS = 5000;
const COPIED_SHOWN_MS = 1500;
const ob = {
  open: false, closedByUser: false,
  info: null, infoError: null,
  settings: null, settingsError: null,
  edit: null, // the device id whose settings the form changes (null: it adds one)
  status: null, // {cls, key, params, raw}
  armed: null, armedTimer: null,
};

function setOnboarding(open, byUser = false) {
  ob.open = open;
  if (byUser && !open) ob.closedByUser = true;
  $('#onboard').hidden = !open;
  $('#onboard-toggle').setAttribute('aria-expanded', String(open));
  $('#onboard-toggle').classList.toggle('active', open);
  if (open) loadOnboarding();
}
$('#onboard-toggle').addEventListener('click', () => setOnboarding(!ob.open, true));
$('#onboard-close').addEventListener('click', () => setOnboarding(false, true));

async function loadOnboarding() {
  renderProvisionAccess();
  renderDeviceForm();
  const info = api('GET', '/api/sip/connect-info').then((v) => { ob.info = v; ob.infoError = null; }, (err) => { ob.infoError = err; });
  const settings = loadSettingsList();
  await info;
  renderConnectInfo();
  await settings;
}

async function loadSettingsList() {
  try {
    const v = await api('GET', '/api/device-settings');
    ob.settings = Array.isArray(v && v.devices) ? v.devices : [];
    ob.settingsError = null;
    for (const x of ob.settings) if (x.settings && x.settings.name) names.set(x.device_id, x.settings.name);
  } catch (err) {
    ob.settingsError = err;
  }
  renderProvisioned();
}

// Copies `text`: the Clipboard API where the page may use it (HTTPS, localhost), else the
// older way through a selection; the button says how it went.
async function copyText(text, button) {
  let ok = false;
  try {
    await navigator.clipboard.writeText(text);
    ok = true;
  } catch (_) {
    const area = el('textarea', { readonly: '', style: 'position:fixed;top:0;left:0;opacity:0;width:1px;height:1px' });
    area.value = text;
    document.body.append(area);
    area.select();
    try { ok = document.execCommand('copy'); } catch (_) { ok = false; }
    area.remove();
  }
  sayKey(button, ok ? 'dev.ob.copied' : 'dev.ob.copy_failed');
  clearTimeout(button.copiedTimer);
  button.copiedTimer = setTimeout(() => sayKey(button, 'dev.ob.copy'), COPIED_SHOWN_MS);
}

function renderConnectInfo() {
  const box = $('#connect-info');
  const note = $('#connect-info-note');
  note.classList.remove('error');
  if (!ob.info) {
    box.replaceChildren();
    if (!ob.infoError) { sayKey(note, 'dev.ob.loading'); return; }
    const err = ob.infoError;
    note.classList.add('error');
    if (err instanceof ApiError && (err.status === 404 || err.status === 405)) sayKey(note, 'dev.ob.unsupported', { status: err.status });
    else say(note, () => `${t('dev.ob.failed')} ${readable(err)}`);
    return;
  }
  sayKey(note, '');
  const i = ob.info;
  // A value to type into the camera: shown as data, with a copy button.
  const value = (key, v, testid) => {
    const text = v === undefined || v === null ? '' : String(v);
    const copy = el('button', { type: 'button', class: 'copy', dataset: { testid: `copy-${testid}` }, onclick: (e) => copyText(text, e.currentTarget) });
    say(copy, () => t('dev.ob.copy'));
    copy.title = t('dev.ob.copy_title', { what: t(key) });
    return [el('dt', {}, t(key)), el('dd', { dataset: { testid: `ci-${testid}` } }, codeEl(text), ' ', copy)];
  };
  const words = (key, parts, testid) => [el('dt', {}, t(key)), el('dd', { dataset: { testid: `ci-${testid}` } }, ...parts)];
  const transports = (Array.isArray(i.transports) ? i.transports : []).map((x) => String(x).toUpperCase());
  const rtp = i.rtp || {};
  const rtpText = rtp.single_port ? t('dev.ob.rtp_single', { port: rtp.single_port }) : t('dev.ob.rtp_range', { min: rtp.port_min ?? '?', max: rtp.port_max ?? '?' });
  const rule = i.password_rule === 'device_or_site'
    ? [[t('dev.ob.pw.rule'), t(i.site_password_set ? 'dev.ob.pw.site_set' : 'dev.ob.pw.site_unset'), t('dev.ob.pw.hidden')].join(t('common.sentence_sep'))]
    : [codeEl(i.password_rule), t('common.sentence_sep'), t('dev.ob.pw.hidden')];
  box.replaceChildren(
    ...value('dev.ob.server_id', i.server_id, 'server-id'),
    ...value('dev.ob.domain', i.domain, 'domain'),
    ...value('dev.ob.address', i.host_ip, 'host'),
    ...value('dev.ob.port', i.sip_port, 'port'),
    ...words('dev.ob.transport', [t('dev.ob.transports', { list: transports.join(' / ') || '—' })], 'transports'),
    ...words('dev.ob.device_id', [t('dev.ob.device_id_hint')], 'device-id'),
    ...words('dev.ob.password', rule, 'password'),
    ...words('dev.ob.rtp', [codeEl(rtpText), el('div', { class: 'muted' }, t('dev.ob.rtp_hint'))], 'rtp'));
}

// The form for an admin; for another key, why there is none.
function renderProvisionAccess() {
  $('#provision-not-admin').hidden = isAdmin !== false;
  $('#device-form').hidden = isAdmin === false;
  if (isAdmin === false && ob.edit) ob.edit = null;
  if (ob.open) renderProvisioned();
}

function renderDeviceForm() {
  const editing = ob.edit !== null;
  sayKey($('#df-title'), editing ? 'dev.ob.edit_title' : 'dev.ob.add_title', { id: ob.edit || '' });
  sayKey($('#df-submit'), editing ? 'dev.ob.save' : 'dev.ob.add');
  $('#df-id').disabled = editing;
  $('#df-cancel').hidden = !editing;
  $('#df-password').dataset.i18nPlaceholder = editing ? 'dev.ob.f.password_keep' : 'dev.ob.f.password_new';
  $('#df-password').placeholder = t($('#df-password').dataset.i18nPlaceholder);
  renderFormStatus();
}

function renderFormStatus() {
  const box = $('#df-status');
  const s = ob.status;
  box.className = `status ${s ? s.cls : ''}`;
  if (!s) { box.replaceChildren(); return; }
  box.replaceChildren(t(s.key, s.params || {}), ...(s.raw ? [' ', codeEl(s.raw)] : []));
}

function clearDeviceForm() {
  for (const id of ['#df-id', '#df-name', '#df-password']) $(id).value = '';
  $('#df-transport').value = '';
  $('#df-ssrc').value = '';
  $('#df-sub').value = '';
  $('#df-password-clear').checked = false;
  $('#df-password-clear-row').hidden = true;
}

// Opens the form on a device's settings (from its details, or the list).
function editDevice(id, settings) {
  const known = (ob.settings || []).find((x) => x.device_id === id);
  const st = settings || (known && known.settings) || {};
  ob.edit = id;
  ob.status = null;
  clearDeviceForm();
  $('#df-id').value = id;
  $('#df-name').value = st.name || '';
  $('#df-transport').value = st.transport || '';
  $('#df-ssrc').value = st.ssrc_check || '';
  $('#df-sub').value = st.sub_stream || '';
  $('#df-password-clear-row').hidden = !st.own_password;
  if (!ob.open) setOnboarding(true);
  renderDeviceForm();
  $('#device-form').scrollIntoView({ block: 'nearest' });
  $('#df-name').focus();
}

function stopEditing() {
  ob.edit = null;
  clearDeviceForm();
  renderDeviceForm();
}
$('#df-cancel').addEventListener('click', () => { ob.status = null; stopEditing(); });

// Why a change was refused, in the operator's words ({cls, key, params, raw}: raw is gmv's).
function settingsProblem(err, id, creating) {
  if (!(err instanceof ApiError)) return { cls: 'error', key: 'err.detail', params: { what: t('err.network'), detail: String(err && err.message || err) } };
  if (err.status === 403) return { cls: 'error', key: 'dev.ob.err.forbidden' };
  if (err.status === 409 && err.code === 'exists') return { cls: 'error', key: 'dev.ob.err.exists', params: { id } };
  if (creating && (err.status === 404 || err.status === 405)) return { cls: 'error', key: 'dev.ob.err.unsupported', params: { status: err.status } };
  return { cls: 'error', key: 'dev.ob.err.other', raw: readable(err) };
}

$('#device-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const editing = ob.edit !== null;
  const id = editing ? ob.edit : $('#df-id').value.trim();
  if (!/^\d{20}$/.test(id)) {
    ob.status = { cls: 'error', key: 'dev.ob.bad_id' };
    renderFormStatus();
    $('#df-id').focus();
    return;
  }
  const name = $('#df-name').value.trim();
  const password = $('#df-password').value;
  const transport = $('#df-transport').value;
  const ssrc = $('#df-ssrc').value;
  const sub = $('#df-sub').value;
  // Adding: what is given. Changing: every field (empty clears it), the password only when
  // typed or removed.
  const body = editing ? {} : { device_id: id };
  if (name || editing) body.name = name || null;
  if (password) body.password = password;
  else if (editing && $('#df-password-clear').checked) body.password = null;
  if (transport || editing) body.transport = transport || null;
  if (ssrc || editing) body.ssrc_check = ssrc || null;
  if (sub || editing) body.sub_stream = sub || null;
  ob.status = { cls: 'muted', key: 'dev.ob.saving' };
  renderFormStatus();
  $('#df-submit').disabled = true;
  try {
    const v = editing ? await api('PUT', `/api/devices/${id}`, body) : await api('POST', '/api/devices', body);
    ob.status = { cls: 'ok', key: editing ? 'dev.ob.saved' : 'dev.ob.added', params: { id } };
    if (v && v.settings && v.settings.name) names.set(id, v.settings.name);
    if (editing) stopEditing(); else clearDeviceForm();
    renderFormStatus();
    loadSettingsList();
    loadDevices();
  } catch (err) {
    ob.status = settingsProblem(err, id, !editing);
    renderFormStatus();
  } finally {
    $('#df-submit').disabled = false;
  }
});

function disarm() {
  clearTimeout(ob.armedTimer);
  ob.armed = null;
}

async function removeDevice(id) {
  disarm();
  try {
    await api('DELETE', `/api/devices/${id}`);
    ob.status = { cls: 'ok', key: 'dev.ob.removed', params: { id } };
    if (ob.edit === id) stopEditing();
    names.delete(id);
    loadDevices();
  } catch (err) {
    ob.status = err instanceof ApiError && err.status === 403 ? { cls: 'error', key: 'dev.ob.err.forbidden' } : { cls: 'error', key: 'dev.ob.err.other', raw: readable(err) };
  }
  renderFormStatus();
  loadSettingsList();
}

// The devices set up here: registered or not (state from the device list), each with edit
// and remove for an admin (remove asks once more).
function renderProvisioned() {
  const note = $('#prov-note');
  const body = $('#prov-rows');
  note.classList.remove('error');
  if (ob.settingsError) {
    const err = ob.settingsError;
    body.replaceChildren();
    $('#provisioned').hidden = true;
    note.classList.toggle('error', !(err instanceof ApiError && err.status === 403));
    if (err instanceof ApiError && err.status === 403) note.textContent = t('dev.ob.list_forbidden');
    else if (err instanceof ApiError && (err.status === 404 || err.status === 405)) note.textContent = t('dev.ob.err.unsupported', { status: err.status });
    else note.textContent = `${t('dev.ob.list_failed')} ${readable(err)}`;
    return;
  }
  const list = ob.settings || [];
  $('#provisioned').hidden = !list.length;
  note.textContent = ob.settings && !list.length ? t('dev.ob.list_none') : '';
  const filtered = $('#device-filter').value.trim() !== '' || $('#online-only').checked;
  body.replaceChildren(...list.map((x) => {
    const st = x.settings || {};
    const d = devices.find((y) => y.device_id === x.device_id);
    const state = d ? t(d.online ? 'dev.online' : 'dev.offline') : (filtered ? '—' : t('dev.ob.state.never'));
    const actions = isAdmin === false ? [] : [
      el('button', { type: 'button', dataset: { testid: `prov-edit-${x.device_id}` }, onclick: () => editDevice(x.device_id, st) }, t('dev.ob.edit')),
      el('button', { type: 'button', class: ob.armed === x.device_id ? 'danger' : '', title: t('dev.ob.remove_title'), dataset: { testid: `prov-remove-${x.device_id}` }, onclick: () => {
        if (ob.armed === x.device_id) { removeDevice(x.device_id); return; }
        disarm();
        ob.armed = x.device_id;
        ob.armedTimer = setTimeout(() => { ob.armed = null; renderProvisioned(); }, REMOVE_ARMED_MS);
        renderProvisioned();
      } }, ob.armed === x.device_id ? t('dev.ob.remove_confirm', { id: x.device_id }) : t('dev.ob.remove')),
    ];
    return el('tr', { dataset: { testid: `prov-${x.device_id}` } },
      el('td', {}, codeEl(x.device_id)),
      el('td', { class: 'data' }, st.name || '—'),
      el('td', {}, st.own_password ? t('dev.ob.pw.own') : t('dev.ob.pw.site')),
      el('td', {}, st.transport ? transportText(st.transport) : t('dev.ob.t.default')),
      el('td', {}, st.ssrc_check ? ssrcText(st.ssrc_check) : t('dev.ob.t.default')),
      el('td', { dataset: { testid: `prov-sub-${x.device_id}` } }, st.sub_stream ? el('span', { class: 'data' }, subStreamText(st.sub_stream)) : t('dev.ob.sub.none_short')),
      el('td', { class: d && d.online ? 'state up' : 'state' }, state),
      el('td', { class: 'actions' }, ...actions));
  }));
}

onLanguage(() => {
  if (!ob.open) return;
  renderConnectInfo();
  renderDeviceForm();
  renderProvisioned();
});

// ---- live wall ----

const tiles = [];
let selected = -1;

/// The wall's layouts: n tiles; 6 is one large tile (2×2) and five small ones on a 3×3 grid.
const LAYOUTS = [1, 4, 6, 9, 16];
const LAYOUT_DEFAULT = 4;
function layout(n) {
  while (tiles.length > n) stopTile(tiles.pop());
  if (selected >= n) selected = -1;
  while (tiles.length < n) tiles.push({ index: tiles.length });
  $('#layout').value = String(n);
  $('#wall').style.setProperty('--cols', String(n === 6 ? 3 : Math.ceil(Math.sqrt(n))));
  $('#wall').classList.toggle('one-large', n === 6);
  renderWall();
  // Smaller or larger tiles now: the sub-stream or the main stream.
  for (const tile of tiles) reconsiderStream(tile);
}
$('#layout').addEventListener('change', (e) => { layout(Number(e.target.value)); saveWall(); });

// ---- the wall kept in this browser ----
// The layout and what each tile plays (device, channel, label) in localStorage, written when
// the operator changes them; read at load, the tiles played when the Live view shows.
const WALL_STORE = 'gmv-wall';
// An id or label kept is at most this long (what is read back is checked like any input).
const WALL_TEXT_MAX = 128;
function saveWall() {
  const kept = tiles.map((x) => (x.channel ? { device: x.device || null, channel: x.channel, label: x.label || null } : null));
  storeSet(localStorage, WALL_STORE, JSON.stringify({ layout: tiles.length, tiles: kept }));
}
function restoreWall() {
  let kept = null;
  try { kept = JSON.parse(storeGet(localStorage, WALL_STORE) || 'null'); } catch (_) { /* not ours: the default */ }
  const n = kept && LAYOUTS.includes(kept.layout) ? kept.layout : LAYOUT_DEFAULT;
  layout(n);
  const text = (v) => typeof v === 'string' && v.length > 0 && v.length <= WALL_TEXT_MAX;
  const entries = kept && Array.isArray(kept.tiles) ? kept.tiles.slice(0, n) : [];
  entries.forEach((x, i) => {
    if (!x || !text(x.channel) || !(x.device === null || text(x.device))) return;
    const tile = tiles[i];
    Object.assign(tile, { device: x.device, channel: x.channel, label: text(x.label) ? x.label : '' });
    tile.node.classList.remove('empty');
    say(tile.name, () => labelOf(tile));
    sayKey(tile.message, 'wall.connecting');
  });
}

// ---- the device tree beside the wall ----
// One tree serves both views: it moves (with its search bar) beside the wall when the Live
// view shows and back into Devices, and is laid out again for the width it has there.
let treeInLive = false;
function placeTree(live) {
  if (live === treeInLive) return;
  treeInLive = live;
  const bar = $('#tree-toolbar');
  const scroll = $('#tree-scroll');
  if (live) {
    $('#live-tree').append(bar, scroll);
  } else {
    $('#view-devices').prepend(bar);
    $('#view-devices').append(scroll);
  }
  $('#device-tree').classList.toggle('compact', live);
  rowHeights.clear();
  renderDevices();
}

// The tree beside the wall: shown or hidden (on a phone a drawer over the wall, closed after a
// channel is chosen).
function setLiveTree(open) {
  $('#view-wall').classList.toggle('tree-closed', !open);
  $('#live-tree-toggle').setAttribute('aria-expanded', String(open));
  if (open) drawVisibleRows();
}
$('#live-tree-toggle').addEventListener('click', () => setLiveTree($('#view-wall').classList.contains('tree-closed')));
$('#live-tree-close').addEventListener('click', () => setLiveTree(false));
// A phone opens the Live view on the wall, the tree a tap away; a window narrowed to a phone's
// width closes it (a drawer over the page), widened again shows it beside the wall.
const PHONE_QUERY = window.matchMedia(`(max-width: ${NARROW_PX}px)`);
if (PHONE_QUERY.matches) setLiveTree(false);
PHONE_QUERY.addEventListener('change', (m) => setLiveTree(!m.matches));

// A click in the tree: the channel plays in the selected tile (the first free one when none
// is), and the selection moves on to the next free tile, so clicks fill the wall in order; on a
// full wall it stays, and the next click replaces what the selected tile plays.
function playFromTree(deviceId, channelId, label) {
  const tile = tiles[selected] || tiles.find((x) => !x.channel) || tiles[0];
  wallPlay(deviceId, channelId, label, tile);
  const after = [...tiles.slice(tile.index + 1), ...tiles.slice(0, tile.index)].find((x) => !x.channel);
  if (after) selectTile(after.index);
  if (PHONE_QUERY.matches) setLiveTree(false);
}

// Dragging a channel: onto a tile, which plays it (see renderWall).
const DRAG_TYPE = 'application/x-gmv-channel';
function dragChannel(e, deviceId, channelId, label) {
  e.dataTransfer.setData(DRAG_TYPE, JSON.stringify({ device: deviceId, channel: channelId, label }));
  e.dataTransfer.setData('text/plain', channelId);
  e.dataTransfer.effectAllowed = 'copy';
}
function dropTarget(tile) {
  const ours = (e) => e.dataTransfer && [...e.dataTransfer.types].includes(DRAG_TYPE);
  tile.node.addEventListener('dragover', (e) => {
    if (!ours(e)) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = 'copy';
    tile.node.classList.add('drop');
  });
  tile.node.addEventListener('dragleave', () => tile.node.classList.remove('drop'));
  tile.node.addEventListener('drop', (e) => {
    tile.node.classList.remove('drop');
    if (!ours(e)) return;
    e.preventDefault();
    let x = null;
    try { x = JSON.parse(e.dataTransfer.getData(DRAG_TYPE)); } catch (_) { return; }
    if (!x || typeof x.channel !== 'string') return;
    wallPlay(typeof x.device === 'string' ? x.device : null, x.channel, typeof x.label === 'string' ? x.label : '', tile);
  });
}

function renderWall() {
  const nodes = tiles.map((tile, i) => {
    if (!tile.node) {
      tile.video = el('video', { muted: '', autoplay: '', playsinline: '' });
      tile.video.muted = true;
      tile.message = sayKey(el('div', { class: 'message' }), 'wall.empty');
      tile.name = el('span', { class: 'name data' }, '');
      tile.stats = el('div', { class: 'stats' }, '');
      // What else the tile should say while it plays (why there is no sound).
      tile.note = el('div', { class: 'note', dataset: { testid: `tile-note-${i}` } }, '');
      // Which stream of the channel plays (the sub-stream in a small tile).
      tile.kindBadge = el('span', { class: 'stream-kind', dataset: { testid: `tile-stream-${i}` } }, '');
      const sound = say(el('button', { title: t('wall.sound_title'), 'data-i18n-title': 'wall.sound_title', onclick: (e) => {
        e.stopPropagation();
        tile.video.muted = !tile.video.muted;
        say(sound, () => (tile.video.muted ? t('wall.sound') : t('wall.mute')));
      } }), () => t('wall.sound'));
      tile.node = el('div', { class: 'tile empty', dataset: { testid: `tile-${i}` }, onclick: () => selectTile(i) },
        tile.video, tile.message,
        el('div', { class: 'label' }, tile.name, tile.kindBadge,
          sound,
          el('button', { title: t('wall.snap_title'), 'data-i18n-title': 'wall.snap_title', 'data-i18n': 'wall.snap', onclick: (e) => { e.stopPropagation(); snapshot(tile); } }, t('wall.snap')),
          el('button', { title: t('wall.full_title'), 'data-i18n-title': 'wall.full_title', 'data-i18n': 'wall.full', onclick: (e) => { e.stopPropagation(); toggleFullScreen(tile); } }, t('wall.full')),
          el('button', { title: t('wall.close_title'), 'data-i18n-title': 'wall.close_title', onclick: (e) => { e.stopPropagation(); stopTile(tile); saveWall(); } }, '✕')),
        tile.note, tile.stats);
      dropTarget(tile);
    }
    tile.node.classList.toggle('selected', i === selected);
    return tile.node;
  });
  // The tiles are put in again only when they changed: a tile taken out of the page, even for
  // a moment, would leave full screen.
  const wall = $('#wall');
  if (wall.children.length !== nodes.length || nodes.some((n, i) => wall.children[i] !== n)) wall.replaceChildren(...nodes);
}

// ---- sub-streams (辅码流) in small tiles ----
// In a wall of more than 4 tiles a channel plays its device's sub-stream (less bandwidth and
// decoding for a small picture) when the device is set up for one (its settings' sub_stream,
// Devices › set up); full screen plays the main stream, and leaving it the sub-stream again.

const SUB_STREAM_TILES_MIN = 5;
// Device id -> its sub_stream setting (null: none), for devices not in the list loaded.
const subSettings = new Map();
const isFullScreen = (tile) => !!tile.node && document.fullscreenElement === tile.node;

async function subStreamOf(deviceId) {
  const d = devices.find((x) => x.device_id === deviceId);
  if (d) return (d.settings && d.settings.sub_stream) || null;
  if (!subSettings.has(deviceId)) {
    try {
      const v = await api('GET', `/api/devices/${deviceId}`);
      subSettings.set(deviceId, (v && v.settings && v.settings.sub_stream) || null);
    } catch (_) {
      return null;
    }
  }
  return subSettings.get(deviceId);
}

async function wantsSubStream(tile, deviceId) {
  if (!deviceId || tiles.length < SUB_STREAM_TILES_MIN || isFullScreen(tile)) return false;
  if (tiles.length === 6 && tile.index === 0) return false; // the large tile of one-and-five
  return !!(await subStreamOf(deviceId));
}

// A channel's play: its sub-stream when `sub` (the main stream when the device is no longer
// set up for one).
async function playChannel(deviceId, channelId, sub) {
  const path = `/api/devices/${deviceId}/channels/${channelId}/play`;
  if (!sub) return api('POST', path, {});
  try {
    return await api('POST', path, { stream: 'sub' });
  } catch (err) {
    if (!(err instanceof ApiError && err.code === 'no_sub_stream')) throw err;
    subSettings.set(deviceId, null);
    return api('POST', path, {});
  }
}

// Plays the tile's channel again when it should play the other stream now.
async function reconsiderStream(tile) {
  if (!tile.device || !tile.channel || $('#view-wall').hidden) return;
  const { device, channel, playId } = tile;
  const want = await wantsSubStream(tile, device);
  if (tile.playId !== playId || tile.device !== device || tile.channel !== channel) return; // played again meanwhile
  if (want !== !!tile.sub) wallPlay(device, channel, tile.label, tile);
}

function toggleFullScreen(tile) {
  if (isFullScreen(tile)) document.exitFullscreen().catch(() => {});
  else if (tile.node.requestFullscreen) tile.node.requestFullscreen().catch(() => {});
}
document.addEventListener('fullscreenchange', () => {
  for (const tile of tiles) reconsiderStream(tile);
});

function sayStreamKind(tile) {
  if (!tile.node) return;
  tile.node.dataset.stream = tile.channel ? (tile.sub ? 'sub' : 'main') : '';
  tile.node.dataset.streamId = tile.streamId || '';
  sayKey(tile.kindBadge, tile.sub ? 'wall.sub' : '');
  tile.kindBadge.title = tile.sub ? t('wall.sub_title') : '';
}

function selectTile(i) {
  const changed = selected !== i;
  selected = i;
  const tile = tiles[i];
  say($('#ptz-target'), () => (tile && tile.channel ? labelOf(tile) : t('ptz.select_tile')));
  renderWall();
  if (changed || presetsOf !== presetsKey(tile)) loadPresets();
}

// The preset list shown is the one of the channel it was asked for: each load is numbered,
// and an answer to one that is no longer the last (another tile selected meanwhile) is
// dropped. `presetsOf` names the channel the list is (being) loaded for.
let presetsLoads = 0;
let presetsOf = null;
const presetsKey = (tile) => (tile && tile.device ? `${tile.device}/${tile.channel}` : null);

// The selected channel's presets (PresetQuery), each with go and delete.
async function loadPresets() {
  const tile = tiles[selected];
  const list = $('#presets');
  const load = ++presetsLoads;
  presetsOf = presetsKey(tile);
  list.dataset.channel = presetsOf ? tile.channel : '';
  if (!presetsOf) { list.replaceChildren(); sayKey($('#presets-of'), ''); return; }
  const { device, channel } = tile;
  const label = labelOf(tile);
  say($('#presets-of'), () => t('ptz.presets_of', { label }));
  list.replaceChildren(el('li', { class: 'muted', 'data-i18n': 'ptz.asking' }, t('ptz.asking')));
  try {
    const { presets } = await api('GET', `/api/devices/${device}/channels/${channel}/presets`);
    if (load !== presetsLoads) return; // another channel's list was asked for meanwhile
    const base = `/api/devices/${device}/channels/${channel}/presets`;
    list.replaceChildren(...presets.map((p) => el('li', { dataset: { testid: `preset-${p.id}` } },
      el('span', {}, `${p.id} ${p.name}`),
      el('button', { title: t('ptz.go_title'), 'data-i18n-title': 'ptz.go_title', 'data-i18n': 'ptz.go', dataset: { testid: `preset-call-${p.id}` }, onclick: () => presetAction('POST', `${base}/${p.id}/call`, false) }, t('ptz.go')),
      el('button', { title: t('ptz.delete'), 'data-i18n-title': 'ptz.delete', onclick: () => presetAction('DELETE', `${base}/${p.id}`, true) }, '✕'))));
    if (!presets.length) list.replaceChildren(el('li', { class: 'muted', 'data-i18n': 'ptz.no_presets' }, t('ptz.no_presets')));
  } catch (err) {
    if (load !== presetsLoads) return;
    list.replaceChildren(say(el('li', { class: 'error' }), () => readable(err)));
  }
}

async function presetAction(method, path, reload) {
  sayKey($('#ptz-error'), '');
  $('#ptz-error').classList.remove('ok');
  try {
    await api(method, path);
    if (reload) loadPresets();
  } catch (err) {
    say($('#ptz-error'), () => readable(err));
  }
}

$('#preset-set').addEventListener('click', () => {
  const tile = tiles[selected];
  const n = Number($('#preset-new').value);
  if (!tile || !tile.device || !(n >= 1 && n <= 255)) { sayKey($('#ptz-error'), 'ptz.need_preset'); return; }
  presetAction('POST', `/api/devices/${tile.device}/channels/${tile.channel}/presets/${n}`, true);
});

// Home position (守望位): back to a preset by itself after the camera is left alone a while.
async function homePosition(enabled) {
  const tile = tiles[selected];
  const preset = Number($('#home-preset').value || (enabled ? NaN : 1));
  const after = Number($('#home-after').value || 0);
  sayKey($('#ptz-error'), '');
  if (!tile || !tile.device || !(preset >= 1 && preset <= 255) || !(after >= 0 && after <= 86400) || !Number.isInteger(after)) {
    sayKey($('#ptz-error'), 'ptz.need_home');
    return;
  }
  try {
    await api('POST', `/api/devices/${tile.device}/channels/${tile.channel}/home`, { enabled, preset, reset_s: after });
    sayKey($('#ptz-error'), enabled ? 'ptz.home_on_done' : 'ptz.home_off_done', { n: preset, s: after });
    $('#ptz-error').classList.add('ok');
  } catch (err) {
    say($('#ptz-error'), () => readable(err));
  }
}
$('#home-set').addEventListener('click', () => homePosition(true));
$('#home-off').addEventListener('click', () => homePosition(false));

function suspendTiles() {
  for (const tile of tiles) {
    tile.playId = 0; // a play still being set up gives up (the tile plays again on return)
    if (tile.player) { tile.player.destroy(); tile.player = null; }
    clearInterval(tile.timer);
  }
}

function resumeTiles() {
  const keep = selected; // each play selects its tile: the operator's selection stays
  let played = false;
  for (const tile of tiles) {
    if (tile.channel && !tile.player && !tile.playId) {
      wallPlay(tile.device, tile.channel, tile.label, tile, tile.level);
      played = true;
    }
  }
  if (played && selected !== keep) selectTile(keep);
}

function stopTile(tile) {
  const shown = presetsOf && presetsOf === presetsKey(tile) && tiles[selected] === tile;
  tile.playId = 0;
  if (tile.player) { tile.player.destroy(); tile.player = null; }
  tile.level = null;
  if (tile.video) tile.video.srcObject = null;
  tile.video && tile.video.removeAttribute('src');
  clearInterval(tile.timer);
  Object.assign(tile, { device: null, channel: null, streamId: null, label: '', noMedia: null, codecs: null, wasm: null, sub: false });
  if (tile.node) {
    sayStreamKind(tile);
    tile.node.classList.add('empty');
    sayKey(tile.message, 'wall.empty');
    sayKey(tile.name, '');
    sayKey(tile.stats, '');
    sayKey(tile.note, '');
  }
  if (shown) loadPresets();
}

// What a tile plays, as its label says: the channel's name, or a bare stream's id.
const labelOf = (tile) => tile.label || t('wall.stream_label', { id: tile.channel });

// What plays a tile, best first: WebRTC (sub-second, and the sound of G.711 cameras), FLV over
// a WebSocket, HLS. A tile that cannot play one goes on to the next, once per play (no loop).
// H.265 in a browser without an H.265 decoder of its own plays with the console's (`wasm`:
// FLV over a WebSocket decoded in a Worker, drawn on a canvas; the sound over WebRTC).
const PLAYERS = ['webrtc', 'flv', 'hls'];
const FIRST_PLAYER = { auto: 0, flv: 1, hls: 2 };
// How long a tile waits for the stream's codecs (GET /api/streams/{id}) before it picks a
// player anyway, and how often it asks meanwhile.
const CODECS_WAIT_MS = 4000;
const CODECS_POLL_MS = 250;
const isG711 = (codec) => codec === 'pcma' || codec === 'pcmu';
// The tile's note that it plays without sound, and why (a key of `wall.no_sound.*`, or the
// words of an error), in the language in force.
const noSound = (tile, why, params = {}) => say(tile.note, () => t('wall.no_sound', { why: typeof why === 'string' ? t(why, params) : readable(why) }));
let plays = 0;

// Whether this browser decodes H.265 itself (Media Source Extensions take hvc1/hev1).
function browserPlaysHevc() {
  const MS = window.ManagedMediaSource || window.MediaSource;
  if (!MS || !MS.isTypeSupported) return false;
  return ['video/mp4; codecs="hvc1.1.6.L93.B0"', 'video/mp4; codecs="hev1.1.6.L93.B0"'].some((type) => MS.isTypeSupported(type));
}

// Why a stream has no media yet, as its GET /api/streams answer says it (null once it has).
// A stream with frames has taken media, whatever `no_media` says (gmv gives RTMP and
// RTSP-pulled streams, fed in process, the RTP lock's "no packet at all").
const noMediaOf = (s) => (s.no_media && !(s.frames > 0) && s.age_ms >= NO_MEDIA_SHOWN_AFTER_MS ? s.no_media : null);

// The stream's codecs, asked until the video's is known (or CODECS_WAIT_MS): its GET
// /api/streams answer, or null when there is none (the tile then tries its players in order).
// Meanwhile `waiting` is told at each ask why nothing came yet (null when the stream says
// nothing).
async function streamCodecs(streamId, current, waiting) {
  const deadline = Date.now() + CODECS_WAIT_MS;
  let info = null;
  for (;;) {
    try {
      info = await api('GET', `/api/streams/${streamId}`);
    } catch (_) {
      return info;
    }
    if (!current() || info.video_codec || Date.now() >= deadline) return info;
    waiting(noMediaOf(info));
    await new Promise((r) => setTimeout(r, CODECS_POLL_MS));
  }
}

// `rechoose`: this play follows a codec learnt only after the first one started (once).
async function wallPlay(deviceId, channelId, label, into, level, rechoose = false) {
  const tile = into || tiles.find((x) => !x.channel) || tiles[Math.max(selected, 0)] || tiles[0];
  stopTile(tile);
  // Each play is numbered; an answer that comes after the tile was stopped or played again
  // (this play no longer its last) is dropped.
  const playId = ++plays;
  tile.playId = playId;
  tile.rechosen = rechoose;
  const current = () => tile.playId === playId;
  tile.level = level ?? FIRST_PLAYER[$('#player').value] ?? 0;
  Object.assign(tile, { device: deviceId, channel: channelId, label });
  saveWall();
  say(tile.name, () => labelOf(tile));
  sayKey(tile.message, 'wall.connecting');
  tile.node.classList.remove('empty');
  selectTile(tile.index);
  say($('#device-count'), () => t('wall.playing_in', { label: labelOf(tile), n: tile.index + 1 }));
  // The next player, once: a failing player's errors may come more than once.
  let nextTaken = false;
  const next = () => {
    if (!current() || nextTaken) return;
    nextTaken = true;
    if (tile.level + 1 >= PLAYERS.length) { sayKey(tile.message, 'wall.no_player'); return; }
    wallPlay(tile.device, tile.channel, tile.label, tile, tile.level + 1);
  };
  try {
    // A device's channel is invited (in a small tile its sub-stream, where the device has
    // one); a bare stream (deviceId null) only needs a play token.
    const sub = await wantsSubStream(tile, deviceId);
    if (!current()) return;
    const session = deviceId
      ? await playChannel(deviceId, channelId, sub)
      : { stream_id: channelId, play: (await api('POST', '/api/play-tokens', { stream_id: channelId })).play };
    if (!current()) return; // stopped or replaced meanwhile
    tile.streamId = session.stream_id;
    tile.sub = !!session.sub_stream;
    sayStreamKind(tile);
    // The codecs decide the player: H.265 without the browser's own decoder, G.711 in FLV.
    const info = await streamCodecs(session.stream_id, current, (noMedia) => {
      if (noMedia) sayKey(tile.message, 'wall.no_media', { why: noMedia });
      tile.noMedia = noMedia;
    });
    if (!current()) return;
    tile.codecs = { video: info && info.video_codec, audio: info && info.audio_codec };
    const player = PLAYERS[tile.level];
    if (tile.codecs.video === 'h265' && !browserPlaysHevc()) {
      playWasm(tile, session);
    } else if (player === 'webrtc') {
      if (!session.play.whep || !window.RTCPeerConnection) return next();
      await playWebRtc(tile, session, next);
    } else if (player === 'hls' || !window.mpegts || !mpegts.isSupported()) {
      // HLS: through hls.js, or natively where the browser plays it (iOS Safari).
      playHls(tile, session);
    } else {
      playFlv(tile, session, next);
    }
    if (tile.player) watchTile(tile);
  } catch (err) {
    if (!current()) return; // the tile plays something else meanwhile
    // The WebRTC offer refused (a codec this browser cannot take over WebRTC): the next player.
    if (PLAYERS[tile.level] === 'webrtc' && !(tile.player && tile.player.name === 'wasm')) return next();
    say(tile.message, () => readable(err));
  }
}

// A recvonly WHEP session for `kinds` ('video', 'audio'): the offer to the stream's WHEP URL,
// the answer back. `ready` settles when gmv answered (rejected with an ApiError when it
// refused); `close()` ends the connection and DELETEs the session (also one answered later).
function whep(session, kinds, onTrack) {
  const pc = new RTCPeerConnection();
  for (const kind of kinds) pc.addTransceiver(kind, { direction: 'recvonly' });
  pc.ontrack = (e) => onTrack(e.track);
  let sessionUrl = null;
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    pc.close();
    if (sessionUrl) fetch(sessionUrl, { method: 'DELETE' }).catch(() => {});
  };
  const ready = (async () => {
    await pc.setLocalDescription(await pc.createOffer());
    const url = new URL(session.play.whep, location.href);
    url.host = location.host; // the answer names the host the API was asked at
    const r = await fetch(url.href, { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: pc.localDescription.sdp });
    if (r.status !== 201) {
      pc.close();
      let body = {};
      try { body = await r.json(); } catch { /* not JSON */ }
      throw new ApiError(r.status, body.code || 'webrtc', body.message || '');
    }
    sessionUrl = new URL(r.headers.get('Location'), url).href;
    if (closed) { // closed while gmv answered: its session goes too
      fetch(sessionUrl, { method: 'DELETE' }).catch(() => {});
      return;
    }
    await pc.setRemoteDescription({ type: 'answer', sdp: await r.text() });
  })();
  return { pc, ready, close, get closed() { return closed; }, get url() { return sessionUrl; } };
}

// WebRTC (WHEP): picture and sound; DELETE when the tile stops.
async function playWebRtc(tile, session, next) {
  const media = new MediaStream();
  const w = whep(session, ['video', 'audio'], (track) => media.addTrack(track));
  const player = { pc: w.pc, destroy: w.close };
  tile.player = player;
  await w.ready;
  if (tile.player !== player) return; // the tile was stopped meanwhile
  // The connection failing (a firewall between the browser and the WebRTC port): the next player.
  w.pc.onconnectionstatechange = () => {
    if (w.pc.connectionState === 'failed' && tile.player === player) next();
  };
  tile.video.srcObject = media;
  tile.video.play().catch(() => {});
  if (!tile.noMedia) sayKey(tile.message, '');
}

// The FLV URL of a play answer as a WebSocket URL on this page's host (a browser opens six
// HTTP/1.1 connections to one origin, not sixteen).
function flvSocketUrl(session) {
  const url = new URL(session.play.flv, location.href);
  url.host = location.host; // the answer names the host the API was asked at
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.href;
}

function playFlv(tile, session, next) {
  // mpegts.js cannot play G.711 ("Unsupported audio codec idx: 7"): the picture alone, its
  // sound tags ignored (hasAudio false), and the tile says why it is silent.
  const g711 = tile.codecs && isG711(tile.codecs.audio);
  const source = { type: 'flv', isLive: true, url: flvSocketUrl(session) };
  if (g711) {
    source.hasAudio = false;
    noSound(tile, 'wall.no_sound.flv_g711');
  }
  tile.player = mpegts.createPlayer(source, { enableStashBuffer: false, liveBufferLatencyChasing: true });
  tile.player.on(mpegts.Events.ERROR, (type, detail) => {
    // FLV failed (a codec MSE refuses, a proxy that drops WebSockets): HLS once.
    if (window.Hls && Hls.isSupported()) {
      next();
      return;
    }
    sayKey(tile.message, 'wall.playback_error', { type, detail });
  });
  tile.player.attachMediaElement(tile.video);
  tile.player.load();
  tile.video.play().catch(() => {});
  if (!tile.noMedia) sayKey(tile.message, '');
}

// ---- the console's own H.265 player (wasm) ----
// Access units waiting for the Worker's decoder past this: pictures are dropped until the next
// keyframe (the decoder is slower than the stream: better live than late).
const WASM_QUEUE_MAX = 10;
// FLV bytes held for one tag past this: the stream is taken as broken and the tile says so.
const FLV_BUFFER_MAX = 8 * 1024 * 1024;
// The decoder's files loaded and compiled within this, or the tile says H.265 cannot play.
const WASM_LOAD_MS = 20000;
const HEVC_WORKER = '/console/hevc-worker.js';
// Access units refused by the decoder, before any picture, after which the tile says so.
const WASM_ERRORS_MAX = 50;

class FlvError extends Error {
  constructor(key, params = {}) {
    super(key);
    this.key = key;
    this.params = params;
  }
}

// FLV from a byte stream that arrives in pieces: the header, then each whole tag to
// `onTag(type, timestampMs, data)` (data only valid during the call).
class FlvReader {
  constructor(onTag) {
    this.onTag = onTag;
    this.buf = new Uint8Array(64 * 1024);
    this.start = 0;
    this.end = 0;
    this.headerDone = false;
  }

  // A message may hold many tags (gmv sends the cached GOP in one): taken in pieces, each
  // parsed before the next, so only a tag not yet whole is held.
  push(bytes) {
    for (let off = 0; off < bytes.length;) {
      const room = FLV_BUFFER_MAX - (this.end - this.start);
      if (room <= 0) throw new FlvError('wall.flv_too_big', { mib: FLV_BUFFER_MAX / 1048576 });
      const n = Math.min(room, bytes.length - off);
      this.append(bytes.subarray(off, off + n));
      off += n;
      this.parse();
    }
  }

  append(bytes) {
    const held = this.end - this.start;
    if (this.end + bytes.length > this.buf.length) {
      // Room at the end: the held bytes moved to the front, in a bigger buffer if need be.
      if (held + bytes.length <= this.buf.length) {
        this.buf.copyWithin(0, this.start, this.end);
      } else {
        let size = this.buf.length;
        while (size < held + bytes.length) size *= 2;
        const buf = new Uint8Array(size);
        buf.set(this.buf.subarray(this.start, this.end));
        this.buf = buf;
      }
      this.start = 0;
      this.end = held;
    }
    this.buf.set(bytes, this.end);
    this.end += bytes.length;
  }

  parse() {
    const b = this.buf;
    if (!this.headerDone) {
      if (this.end - this.start < 9) return;
      if (b[this.start] !== 0x46 || b[this.start + 1] !== 0x4c || b[this.start + 2] !== 0x56) throw new FlvError('wall.flv_bad', { why: 'no FLV header' });
      const offset = ((b[this.start + 5] << 24) | (b[this.start + 6] << 16) | (b[this.start + 7] << 8) | b[this.start + 8]) >>> 0;
      if (this.end - this.start < offset + 4) return;
      this.start += offset + 4; // the header, PreviousTagSize0
      this.headerDone = true;
    }
    while (this.end - this.start >= 11) {
      const s = this.start;
      const size = (b[s + 1] << 16) | (b[s + 2] << 8) | b[s + 3];
      if (11 + size + 4 > FLV_BUFFER_MAX) throw new FlvError('wall.flv_too_big', { mib: FLV_BUFFER_MAX / 1048576 });
      if (this.end - s < 11 + size + 4) return;
      const ts = ((b[s + 7] << 24) | (b[s + 4] << 16) | (b[s + 5] << 8) | b[s + 6]) >>> 0;
      this.start = s + 11 + size + 4;
      this.onTag(b[s] & 0x1f, ts, b.subarray(s + 11, s + 11 + size));
    }
    if (this.start === this.end) this.start = this.end = 0;
  }
}

// H.265 from FLV video tags (enhanced RTMP 'hvc1', or the legacy codec id 12) as Annex B access
// units: `onAccessUnit(au, key, ptsMs)`; the parameter sets of the last
// HEVCDecoderConfigurationRecord go before each keyframe (the first one decoded may be any of
// them). Throws FlvError for another codec.
function hevcFromFlv(onAccessUnit) {
  let params = null; // Annex B VPS/SPS/PPS (and SEI) of the last hvcC
  let lengthSize = 4;
  const config = (r) => {
    if (r.length < 23) return;
    lengthSize = (r[21] & 3) + 1;
    const nals = [];
    let p = 23;
    for (let i = 0, arrays = r[22]; i < arrays && p + 3 <= r.length; i++) {
      const count = (r[p + 1] << 8) | r[p + 2];
      p += 3;
      for (let j = 0; j < count && p + 2 <= r.length; j++) {
        const len = (r[p] << 8) | r[p + 1];
        nals.push(r.subarray(p + 2, p + 2 + len));
        p += 2 + len;
      }
    }
    let size = 0;
    for (const n of nals) size += 4 + n.length;
    params = new Uint8Array(size);
    let o = 0;
    for (const n of nals) { params.set([0, 0, 0, 1], o); params.set(n, o + 4); o += 4 + n.length; }
  };
  const frame = (d, key, ptsMs) => {
    // Length-prefixed NAL units to start codes, one pass to size, one to copy.
    let size = key && params ? params.length : 0;
    for (let p = 0; p + lengthSize <= d.length;) {
      let len = 0;
      for (let i = 0; i < lengthSize; i++) len = len * 256 + d[p + i];
      if (p + lengthSize + len > d.length) break;
      size += 4 + len;
      p += lengthSize + len;
    }
    const au = new Uint8Array(size);
    let o = 0;
    if (key && params) { au.set(params, 0); o = params.length; }
    for (let p = 0; p + lengthSize <= d.length;) {
      let len = 0;
      for (let i = 0; i < lengthSize; i++) len = len * 256 + d[p + i];
      if (p + lengthSize + len > d.length) break;
      au[o + 3] = 1;
      au.set(d.subarray(p + lengthSize, p + lengthSize + len), o + 4);
      o += 4 + len;
      p += lengthSize + len;
    }
    if (o > 0) onAccessUnit(au, key, ptsMs);
  };
  const cts = (d, i) => ((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]) << 8 >> 8;
  return (ts, d) => {
    if (d.length < 5) return;
    const key = ((d[0] >> 4) & 7) === 1;
    if (d[0] & 0x80) { // enhanced RTMP: IsExHeader, PacketType, FourCC
      const fourcc = String.fromCharCode(d[1], d[2], d[3], d[4]);
      if (fourcc !== 'hvc1') throw new FlvError('wall.wasm_codec', { codec: fourcc });
      const type = d[0] & 0x0f;
      if (type === 0) config(d.subarray(5));
      else if (type === 1 && d.length > 8) frame(d.subarray(8), key, ts + cts(d, 5));
      else if (type === 3) frame(d.subarray(5), key, ts);
      return;
    }
    const codec = d[0] & 0x0f;
    if (codec !== 12) throw new FlvError('wall.wasm_codec', { codec: codec === 7 ? 'H.264' : `FLV codec id ${codec}` });
    if (d[1] === 0) config(d.subarray(5));
    else if (d[1] === 1) frame(d.subarray(5), key, ts + cts(d, 2));
  };
}

// The wasm player: the decoder's Worker up first, then FLV over a WebSocket, each access unit
// to the Worker, each picture it gives back drawn on a canvas over the tile's <video> (which
// plays the sound, a sound-only WHEP session, when the stream's is G.711). Stopping it closes
// the socket, ends the Worker, closes the WebRTC session (DELETE) and removes the canvas; a
// failure stops the same but leaves the last picture under what the tile says.
function playWasm(tile, session) {
  const canvas = el('canvas', { class: 'picture', dataset: { testid: `tile-canvas-${tile.index}` } });
  const ctx = canvas.getContext('2d');
  tile.video.after(canvas);
  const w = { ws: null, worker: null, sound: null, queued: 0, drawn: 0, dropped: 0, errors: 0, skipping: false, started: false, latest: null, raf: 0, stopped: false, opened: false, loadTimer: 0 };
  const player = { name: 'wasm', wasm: w, canvas, destroy: () => { stop(); canvas.remove(); } };
  tile.player = player;
  tile.wasm = w;
  const live = () => tile.player === player && !w.stopped;
  function stop() {
    if (w.stopped) return;
    w.stopped = true;
    clearTimeout(w.loadTimer);
    if (w.ws) { w.ws.onclose = null; w.ws.onmessage = null; w.ws.close(); }
    if (w.worker) w.worker.terminate();
    if (w.raf) cancelAnimationFrame(w.raf);
    if (w.sound) w.sound.close();
  }
  function fail(key, params) {
    if (!live()) return;
    stop();
    sayKey(tile.message, key, params);
  }
  function draw() {
    w.raf = 0;
    const f = w.latest;
    if (!f || !live()) return;
    w.latest = null;
    if (canvas.width !== f.width || canvas.height !== f.height) { canvas.width = f.width; canvas.height = f.height; }
    ctx.putImageData(new ImageData(new Uint8ClampedArray(f.rgba), f.width, f.height), 0, 0);
    if (!w.drawn) sayKey(tile.message, '');
    w.drawn++;
  }
  const toDecoder = (au, key, pts) => {
    // Behind: drop pictures until a keyframe finds the queue short again.
    if (w.queued >= WASM_QUEUE_MAX) w.skipping = true;
    if (w.skipping || !w.started) {
      if (!key || w.queued >= WASM_QUEUE_MAX) { if (w.started) w.dropped++; return; }
      w.skipping = false;
      w.started = true;
    }
    w.queued++;
    w.worker.postMessage({ type: 'au', au, key, pts }, [au.buffer]);
  };
  const onVideo = hevcFromFlv(toDecoder);
  const reader = new FlvReader((type, ts, data) => { if (type === 9) onVideo(ts, data); });
  function open() {
    const ws = new WebSocket(flvSocketUrl(session));
    w.ws = ws;
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => { w.opened = true; };
    ws.onmessage = (e) => {
      try {
        reader.push(new Uint8Array(e.data));
      } catch (err) {
        if (err instanceof FlvError) fail(err.key, err.params);
        else fail('wall.playback_error', { type: 'wasm', detail: String(err && err.message || err) });
      }
    };
    // gmv closed it: the stream ended (or this viewer was cut); said, not reopened.
    ws.onclose = (e) => fail(w.opened ? 'wall.ended' : 'wall.flv_refused', { code: e.code });
  }
  const unplayable = (why) => fail('wall.hevc_unplayable', { why });
  if (!window.Worker || !window.WebAssembly) {
    unplayable(t('wall.hevc_no_wasm'));
    return;
  }
  try {
    w.worker = new Worker(HEVC_WORKER);
  } catch (err) {
    unplayable(String(err && err.message || err));
    return;
  }
  w.worker.onerror = (e) => { e.preventDefault(); unplayable(e.message || t('wall.hevc_worker_failed')); };
  w.worker.onmessage = (e) => {
    const m = e.data;
    if (m.type === 'frame') {
      w.latest = m;
      if (!w.raf && live()) w.raf = requestAnimationFrame(draw);
    } else if (m.type === 'done') {
      w.queued = Math.max(0, w.queued - 1);
      // Access units the decoder refuses, and never a picture: said, not tried for ever.
      if (m.error < 0 && !w.drawn && ++w.errors >= WASM_ERRORS_MAX) fail('wall.hevc_undecodable', { code: m.error });
    } else if (m.type === 'ready') {
      clearTimeout(w.loadTimer);
      if (live()) open();
    } else if (m.type === 'error') {
      if (m.stage === 'format') fail('wall.hevc_format', { why: m.error });
      else unplayable(m.error);
    }
  };
  w.loadTimer = setTimeout(() => unplayable(t('wall.hevc_load_slow', { s: WASM_LOAD_MS / 1000 })), WASM_LOAD_MS);
  w.worker.postMessage({ type: 'init' });
  wasmSound(tile, session, player);
}

// The wasm player's sound: G.711 over a sound-only WHEP session, played by the tile's <video>.
// Without it the picture plays on and the tile's note says why there is no sound.
function wasmSound(tile, session, player) {
  const audio = tile.codecs && tile.codecs.audio;
  const silent = (why, params) => { if (tile.player === player) noSound(tile, why, params); };
  if (!audio) return; // the camera sends none
  if (!isG711(audio)) return silent('wall.no_sound.codec', { codec: audio });
  if (!session.play.whep || !window.RTCPeerConnection) return silent('wall.no_sound.no_webrtc');
  const media = new MediaStream();
  const w = whep(session, ['audio'], (track) => media.addTrack(track));
  player.wasm.sound = w;
  player.pc = w.pc;
  w.ready.then(() => {
    if (tile.player !== player || w.closed) return;
    w.pc.onconnectionstatechange = () => {
      if (w.pc.connectionState === 'failed') silent('wall.no_sound.failed');
    };
    tile.video.srcObject = media;
    tile.video.play().catch(() => {});
  }, (err) => {
    if (!w.closed) silent(err);
  });
}

// The tile's figures every few seconds: the stream's from the API, the frames drawn here.
function watchTile(tile) {
  let frames = 0;
  const shown = () => {
    if (tile.wasm && tile.player && tile.player.wasm === tile.wasm) return tile.wasm.drawn;
    return tile.video.getVideoPlaybackQuality ? tile.video.getVideoPlaybackQuality().totalVideoFrames : 0;
  };
  tile.timer = setInterval(async () => {
    const now = shown();
    const fps = Math.round((now - frames) * 1000 / STATS_INTERVAL_MS);
    frames = now;
    try {
      const s = await api('GET', `/api/streams/${tile.streamId}`);
      const player = (tile.player && tile.player.name) || PLAYERS[tile.level];
      sayKey(tile.stats, 'wall.stats', { player, codec: s.video_codec || '?', width: s.width || '?', height: s.height || '?', kbps: s.bitrate_kbps, fps, lost: s.lost });
      // Nothing taken yet: say why on the tile (what arrived from where, or nothing at all).
      const noMedia = noMediaOf(s);
      if (noMedia) sayKey(tile.message, 'wall.no_media', { why: noMedia });
      else if (tile.noMedia) sayKey(tile.message, '');
      tile.noMedia = noMedia;
      // H.265 learnt only after the player was chosen (the camera was slow to send), in a
      // browser that cannot show it: chosen again, once.
      if (s.video_codec === 'h265' && tile.codecs && !tile.codecs.video && !tile.rechosen && !(tile.player && tile.player.name === 'wasm') && !browserPlaysHevc()) {
        wallPlay(tile.device, tile.channel, tile.label, tile, tile.level, true);
      }
    } catch (err) {
      // The stream closed: keep what it said while it waited, if it never got media.
      say(tile.stats, () => readable(err));
      if (tile.noMedia) sayKey(tile.message, 'wall.closed_no_media', { why: tile.noMedia });
    }
  }, STATS_INTERVAL_MS);
}

function playHls(tile, session) {
  // H.265 plays from fMP4 segments where a browser plays it at all (TS ones: hardly anywhere).
  const hevc = tile.codecs && tile.codecs.video === 'h265' && session.play.hls_fmp4;
  const url = new URL(hevc ? session.play.hls_fmp4 : session.play.hls, location.href);
  url.host = location.host;
  if (tile.codecs && isG711(tile.codecs.audio)) noSound(tile, 'wall.no_sound.hls_g711');
  // hls.js where Media Source Extensions exist; the browser's own HLS (iOS Safari) otherwise.
  if (window.Hls && Hls.isSupported()) {
    const hls = new Hls({ liveSyncDurationCount: 2 });
    hls.loadSource(url.href);
    hls.attachMedia(tile.video);
    tile.player = { destroy: () => hls.destroy() };
  } else if (tile.video.canPlayType('application/vnd.apple.mpegurl')) {
    tile.video.src = url.href;
  } else {
    sayKey(tile.message, 'wall.no_player');
    return;
  }
  tile.video.play().catch(() => {});
}

async function snapshot(tile) {
  if (!tile.streamId) return;
  try {
    const r = await fetch(`/api/streams/${tile.streamId}/snapshot`, { headers: authHeaders('GET') });
    if (r.status === 401) sessionEnded();
    if (!r.ok) {
      let body = {};
      try { body = await r.json(); } catch { /* not JSON */ }
      throw new ApiError(r.status, body.code || 'no_snapshot', body.message || '');
    }
    const a = el('a', { href: URL.createObjectURL(await r.blob()), download: `${tile.streamId}.jpg` });
    a.click();
  } catch (err) {
    say(tile.message, () => readable(err));
  }
}

// PTZ: press and hold to move (eight ways, zoom), focus or open the iris; release to stop.
const PTZ_MOVES = {
  up: { tilt: 1 }, down: { tilt: -1 }, left: { pan: -1 }, right: { pan: 1 },
  'up-left': { pan: -1, tilt: 1 }, 'up-right': { pan: 1, tilt: 1 }, 'down-left': { pan: -1, tilt: -1 }, 'down-right': { pan: 1, tilt: -1 },
  in: { zoom: 1 }, out: { zoom: -1 },
  near: { focus: -1 }, far: { focus: 1 }, open: { iris: 1 }, close: { iris: -1 },
};
// What stops each: focus and iris have their own stop; a move stops with all zero.
const ptzStop = (move) => ('focus' in move ? { focus: 0 } : 'iris' in move ? { iris: 0 } : {});
const ptzSpeed = () => Number($('#ptz-speed').value) || 0.5;
$('#ptz-speed').addEventListener('input', () => { $('#ptz-speed-value').value = $('#ptz-speed').value; });
async function ptz(body) {
  const tile = tiles[selected];
  sayKey($('#ptz-error'), '');
  $('#ptz-error').classList.remove('ok');
  if (!tile || !tile.channel) { sayKey($('#ptz-error'), 'ptz.need_tile'); return; }
  if (!tile.device) { sayKey($('#ptz-error'), 'ptz.bare_stream'); return; }
  try {
    await api('POST', `/api/devices/${tile.device}/channels/${tile.channel}/ptz`, body);
  } catch (err) {
    say($('#ptz-error'), () => readable(err));
  }
}
for (const b of document.querySelectorAll('[data-ptz]')) {
  const move = PTZ_MOVES[b.dataset.ptz];
  let moving = false;
  const start = (e) => { e.preventDefault(); moving = true; ptz({ ...move, speed: ptzSpeed() }); };
  const stop = () => { if (moving) { moving = false; ptz(ptzStop(move)); } };
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
  sayKey(s, key, params);
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
    r = await fetch(path, { method: 'POST', headers: { 'Content-Type': 'application/sdp', ...authHeaders('POST') }, body: me.pc.localDescription.sdp });
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
      const state = () => (!b ? '…' : `talk.target.${b.state}` in I18N.en ? t(`talk.target.${b.state}`, { why: b.why || '' }) : b.state);
      return say(el('li', { class: b && b.state === 'ended' ? 'error' : '', dataset: { testid: `talk-target-${x.channel}` } }),
        () => t('talk.target', { name: x.label || x.channel, state: state() }));
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
      el('td', {}, String(s.subscribers)), el('td', { class: 'data' }, s.transport ? s.transport.toUpperCase() : '—'),
      el('td', {}, el('button', { title: t('common.play_in_wall'), dataset: { testid: `play-stream-${s.stream_id}` }, onclick: () => { wallPlay(null, s.stream_id, null); show('wall'); } }, '▶')))));
    const sip = await api('GET', '/api/sip');
    // Each counter under its name in the operator's language (an unknown one under its own).
    say($('#sip-counters'), () => Object.entries(sip.counters).flatMap(([k, n]) => [
      el('dt', {}, `st.c.${k}` in I18N.en ? t(`st.c.${k}`) : el('code', {}, k)), el('dd', {}, String(n))]));
  } catch (err) {
    $('#stream-rows').replaceChildren(el('tr', {}, say(el('td', { class: 'error' }), () => readable(err))));
  }
}

// ---- nodes: this control's place (active or standby) and the media nodes it places on ----

function controlText(c) {
  if (!c) return t('nodes.no_sip');
  if (c.mode === 'single') return t('nodes.single');
  if (c.mode === 'active') return t('nodes.active', { instance: c.instance, epoch: c.epoch });
  return t('nodes.standby', { instance: c.instance, leader: c.leader || t('nodes.no_leader') });
}

// A media node's state in words (an unknown one as gmv names it).
function nodeState(n) {
  const state = `nodes.state.${n.state}` in I18N.en ? t(`nodes.state.${n.state}`) : n.state;
  return n.draining ? t('nodes.draining', { state }) : state;
}

async function loadNodes() {
  try {
    const health = await api('GET', '/api/health');
    say($('#control-state'), () => controlText(health.control));
    let nodes;
    try {
      ({ nodes } = await api('GET', '/api/nodes'));
    } catch (err) {
      if (err.code !== 'not_control') throw err;
      $('#node-table').hidden = true;
      sayCode($('#nodes-note'), 'nodes.all_in_one', { setting: 'node.role: control' });
      return;
    }
    $('#node-table').hidden = false;
    sayKey($('#nodes-note'), nodes.length ? '' : 'nodes.none');
    $('#node-rows').replaceChildren(...nodes.map((n) => el('tr', { dataset: { testid: `node-${n.id}` } },
      el('td', { title: t('nodes.address', { api: n.api, ip: n.media_ip }) }, n.id),
      el('td', { class: `state ${n.state}${n.draining ? ' draining' : ''}`, dataset: { testid: `node-state-${n.id}` } }, nodeState(n)),
      el('td', {}, String(n.load.streams)), el('td', {}, String(n.placed)), el('td', {}, String(n.load.viewers)),
      el('td', {}, (n.load.ingest_kbps / 1000).toFixed(1)), el('td', {}, `${Math.round(n.load.cpu_percent)} %`),
      el('td', {}, n.last_keepalive_s_ago == null ? t('nodes.never') : t('nodes.ago', { s: n.last_keepalive_s_ago })),
      el('td', {}, el('button', {
        title: n.draining ? t('nodes.undrain_title') : t('nodes.drain_title'),
        dataset: { testid: `drain-${n.id}` },
        onclick: () => drain(n.id, !n.draining),
      }, n.draining ? t('nodes.undrain') : t('nodes.drain'))))));
  } catch (err) {
    say($('#nodes-note'), () => readable(err));
  }
}

async function drain(id, on) {
  try {
    await api(on ? 'POST' : 'DELETE', `/api/nodes/${encodeURIComponent(id)}/drain`);
  } catch (err) {
    say($('#nodes-note'), () => readable(err));
    return;
  }
  loadNodes();
}

// The tables shown now follow a switch at once (not at their next refresh).
onLanguage(() => {
  if (!$('#view-streams').hidden) loadStreams();
  if (!$('#view-nodes').hidden) loadNodes();
});

// ---- dashboard (概览): this gmv at a glance, the first view of a person signed in ----
// GET /api/dashboard, asked again every few seconds while the view is shown (one request at a
// time; nothing asked while another view is shown).

const DASH_REFRESH_MS = 3000;
const dash = { data: null, error: null, at: 0, timer: null, run: 0 };

function startDashboard() {
  stopDashboard();
  const run = dash.run;
  const tick = async () => {
    await loadDashboard(run);
    if (run === dash.run) dash.timer = setTimeout(tick, DASH_REFRESH_MS);
  };
  tick();
}

function stopDashboard() {
  dash.run += 1;
  clearTimeout(dash.timer);
  dash.timer = null;
}

async function loadDashboard(run) {
  try {
    const v = await api('GET', '/api/dashboard');
    if (run !== dash.run) return;
    Object.assign(dash, { data: v, error: null, at: Date.now() });
  } catch (err) {
    if (run !== dash.run) return;
    dash.error = err;
  }
  renderDashboard();
}

const numText = (n) => (typeof n === 'number' ? n.toLocaleString(dateLocale()) : '—');
const mbitText = (kbps) => (typeof kbps === 'number' ? (kbps / 1000).toFixed(kbps >= 100000 ? 0 : 1) : '—');

// "3 d 4 h", "2 h 5 min", "4 min 10 s" in the language in force.
function uptimeText(s) {
  s = Math.max(0, Math.floor(Number(s) || 0));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d) return t('common.days_hours', { d, h });
  if (h) return t('common.hours_mins', { h, m });
  return waitText(s);
}

// One figure: its name, its value, a line under it.
function dashCard(id, label, value, sub = '', cls = '') {
  return el('div', { class: `dash-card ${cls}`, dataset: { testid: `dash-${id}` } },
    el('div', { class: 'label' }, t(label)),
    el('div', { class: 'value', dataset: { testid: `dash-${id}-value` } }, value),
    el('div', { class: 'sub' }, ...(Array.isArray(sub) ? sub : [sub])));
}

function renderDashboard() {
  const note = $('#dash-note');
  note.hidden = !dash.error;
  if (dash.error) say(note, () => t('dash.failed', { why: readable(dash.error) }));
  const d = dash.data;
  if (!d) {
    if (!dash.error) sayKey($('#dash-about'), 'dash.loading');
    return;
  }
  const p = d.process || {};
  const m = d.media || {};
  say($('#dash-about'), () => [el('strong', {}, 'gmv'), ' ', el('span', { class: 'data', dataset: { testid: 'dash-version' } }, d.version), ' · ',
    t('dash.node', { id: d.node_id }), ' · ', t('dash.up_for', { time: uptimeText(d.uptime_s) })]);
  say($('#dash-updated'), () => (dash.at ? t('dash.updated', { time: timeText(dash.at) }) : ''));
  const cores = Number(p.cores) || 1;
  const disk = d.disk;
  const diskUsed = disk && disk.total_bytes ? 1 - disk.free_bytes / disk.total_bytes : null;
  const lostPct = m.packets ? (100 * m.lost) / (m.packets + m.lost) : 0;
  const dev = d.devices;
  const cards = [
    dashCard('version', 'dash.c.version', el('span', { class: 'data' }, d.version || '—'), t('dash.node', { id: d.node_id || '—' })),
    dashCard('uptime', 'dash.c.uptime', uptimeText(d.uptime_s), d.started_at ? t('dash.since', { time: dateText(d.started_at * 1000) }) : ''),
    dashCard('cpu', 'dash.c.cpu', typeof p.cpu_percent === 'number' ? `${p.cpu_percent.toFixed(1)} %` : '—', t('dash.cpu_sub', { cores, max: cores * 100 }),
      p.cpu_percent > cores * 80 ? 'warn' : ''),
    dashCard('memory', 'dash.c.memory', typeof p.rss_bytes === 'number' ? sizeText(p.rss_bytes) : '—', t('dash.memory_sub')),
    dashCard('files', 'dash.c.files', numText(p.open_fds), t('dash.files_sub')),
    dashCard('disk', 'dash.c.disk', disk ? t('dash.disk_free', { size: sizeText(disk.free_bytes) }) : '—',
      disk ? [t('dash.disk_of', { total: sizeText(disk.total_bytes), pct: Math.round(diskUsed * 100) }), el('progress', { max: '1', value: String(diskUsed) }), el('code', { class: 'path' }, disk.path)] : t('dash.disk_unknown'),
      diskUsed !== null && diskUsed > 0.9 ? 'warn' : ''),
    dashCard('streams', 'dash.c.streams', numText(m.streams), t('dash.streams_sub', { hls: numText(m.hls_streams), rec: numText(m.recordings) })),
    dashCard('viewers', 'dash.c.viewers', numText(m.viewers), t('dash.viewers_sub')),
    dashCard('webrtc', 'dash.c.webrtc', numText(m.webrtc_sessions), t('dash.webrtc_sub')),
    dashCard('ingest', 'dash.c.ingest', `${mbitText(m.ingest_kbps)} Mbit/s`, t('dash.ingest_sub')),
    dashCard('lost', 'dash.c.lost', numText(m.lost), [t('dash.lost_sub', { packets: numText(m.packets), pct: lostPct.toFixed(lostPct < 1 ? 2 : 1) }),
      ...(m.foreign_packets ? [el('br'), t('dash.foreign_sub', { n: numText(m.foreign_packets) })] : [])], lostPct >= 1 ? 'warn' : ''),
    dashCard('no-media', 'dash.c.no_media', numText(m.streams_without_media), m.streams_without_media ? t('dash.no_media_sub') : t('dash.no_media_none'),
      m.streams_without_media ? 'warn' : ''),
    dev ? dashCard('devices', 'dash.c.devices', t('dash.devices_online', { n: numText(dev.online) }),
      t('dash.devices_sub', { offline: numText(dev.offline), total: numText(dev.total), channels: numText(dev.channels) }), dev.offline ? 'warn' : '')
      : dashCard('devices', 'dash.c.devices', '—', t('dash.devices_none')),
  ];
  $('#dash-cards').replaceChildren(...cards);
  renderDashNodes(d.nodes || []);
  renderDashErrors(d.recent_errors || []);
}

function renderDashNodes(nodes) {
  $('#dash-nodes').hidden = !nodes.length;
  sayKey($('#dash-nodes-note'), nodes.length ? '' : 'dash.no_nodes');
  const cell = (key, v, cls = '') => el('td', { class: cls, 'data-label': t(key) }, el('span', { class: 'v' }, v));
  $('#dash-node-rows').replaceChildren(...nodes.map((n) => {
    const load = n.load || {};
    const cores = Number(load.cores) || 0;
    return el('tr', { dataset: { testid: `dash-node-${n.id}` } },
      cell('nodes.h.node', [el('code', {}, n.id), el('div', { class: 'muted' }, t('nodes.address', { api: n.api, ip: n.media_ip }))]),
      cell('nodes.h.state', nodeState(n), `state ${n.state}${n.draining ? ' draining' : ''}`),
      cell('dash.h.cpu', typeof load.cpu_percent === 'number' ? `${Math.round(load.cpu_percent)} %${cores ? ` / ${cores * 100} %` : ''}` : '—'),
      cell('dash.h.memory', load.rss_bytes ? sizeText(load.rss_bytes) : '—'),
      cell('nodes.h.streams', numText(load.streams)),
      cell('nodes.h.viewers', numText(load.viewers)),
      cell('nodes.h.ingest', mbitText(load.ingest_kbps)),
      cell('nodes.h.keepalive', n.last_keepalive_s_ago == null ? t('nodes.never') : t('nodes.ago', { s: n.last_keepalive_s_ago })));
  }));
}

function renderDashErrors(list) {
  sayKey($('#dash-errors-note'), list.length ? '' : 'dash.no_errors');
  const today = new Date().toDateString();
  $('#dash-errors').replaceChildren(...list.map((e) => {
    const level = String(e.level || '').toUpperCase();
    const when = new Date(e.unix_ms);
    return el('li', { class: level === 'ERROR' ? 'error' : 'warn', dataset: { testid: 'dash-error' } },
      el('time', { datetime: when.toISOString(), title: dateText(e.unix_ms) }, when.toDateString() === today ? timeText(e.unix_ms) : dateText(e.unix_ms)), ' ',
      el('span', { class: 'level' }, level === 'ERROR' ? t('dash.level.error') : level === 'WARN' ? t('dash.level.warn') : level), ' ',
      el('span', { class: 'message data' }, e.message || ''), ' ',
      el('code', { class: 'target' }, e.target || ''));
  }));
}

onLanguage(() => { if (!$('#view-dashboard').hidden) renderDashboard(); });

// ---- users (用户): who signs in to the console and with which role (an admin's) ----
// GET /api/users lists them with the sign-in counters; each row changes its role at once,
// takes a new password, or is deleted (asked once more). Every refusal is said in words.

const USER_NAME_RE = /^[A-Za-z0-9_.-]{1,32}$/;
const ROLES = ['viewer', 'operator', 'admin'];
const usr = { list: null, counters: null, error: null, armed: null, armedTimer: null, pwOpen: null, status: null };

function openUsers() {
  usr.status = null;
  $('#uf-status').className = 'status';
  sayKey($('#uf-status'), '');
  loadUsers();
}

async function loadUsers() {
  try {
    const v = await api('GET', '/api/users');
    usr.list = Array.isArray(v && v.users) ? v.users : [];
    usr.counters = (v && v.counters) || null;
    usr.error = null;
  } catch (err) {
    usr.error = err;
  }
  renderUsers();
}

// A refusal of the users API, in words (`name`: the user it was about).
function usersProblem(err, name) {
  if (!(err instanceof ApiError)) return () => readable(err);
  if (err.status === 403) return () => t('users.err.forbidden');
  if (err.status === 404) return () => t('users.err.gone', { name });
  if (err.status === 409 && err.code === 'exists') return () => t('users.err.exists', { name });
  if (err.status === 400 || err.status === 409) return () => t('users.err.refused', { why: err.message || err.code || err.status });
  return () => readable(err);
}

// What a new password lacks (null: it will do).
function passwordRuleKey(password) {
  const n = utf8Bytes(password);
  return n < 8 || n > 128 ? 'users.bad_password' : null;
}

function usersStatus(cls, fn) {
  usr.status = { cls, fn };
  renderUsersStatus();
}

function renderUsersStatus() {
  const box = $('#users-status');
  box.className = `status ${usr.status ? usr.status.cls : ''}`;
  if (usr.status) say(box, usr.status.fn); else sayKey(box, '');
}

function renderUsers() {
  const note = $('#users-note');
  const forbidden = usr.error instanceof ApiError && usr.error.status === 403;
  note.hidden = !usr.error;
  note.classList.toggle('error', !!usr.error && !forbidden);
  if (usr.error) say(note, forbidden ? () => t('users.not_admin') : () => t('users.failed', { why: readable(usr.error) }));
  $('#user-form').hidden = forbidden;
  $('#users-table').hidden = forbidden || !usr.list;
  $('#user-rows').replaceChildren(...(usr.list || []).flatMap(userRow));
  const c = usr.counters;
  if (c && !forbidden) sayKey($('#users-counters'), 'users.counters', { ok: numText(c.sign_ins), failed: numText(c.sign_in_failures), throttled: numText(c.sign_ins_throttled) });
  else sayKey($('#users-counters'), '');
  renderUsersStatus();
}

function userRow(u) {
  const self = !!(me && me.kind === 'user' && me.name === u.name);
  const cell = (key, cls, ...v) => el('td', { class: cls, 'data-label': key ? t(key) : '' }, el('div', { class: 'v' }, ...v));
  const role = el('select', { 'aria-label': t('users.role_of', { name: u.name }), dataset: { testid: `user-role-${u.name}` }, onchange: (e) => setUserRole(u, e.target.value) },
    ...ROLES.map((r) => el('option', { value: r }, roleText(r))));
  role.value = u.role;
  const pwOpen = usr.pwOpen === u.name;
  const armed = usr.armed === u.name;
  const actions = [
    el('button', { type: 'button', 'aria-expanded': String(pwOpen), dataset: { testid: `user-pw-${u.name}` }, onclick: () => {
      usr.pwOpen = pwOpen ? null : u.name;
      renderUsers();
      if (!pwOpen) $(`[data-testid="user-pw-input-${u.name}"]`).focus();
    } }, t(pwOpen ? 'users.pw_cancel' : 'users.pw_set')),
    el('button', { type: 'button', class: armed ? 'danger' : '', title: t('users.delete_title'), dataset: { testid: `user-delete-${u.name}` }, onclick: () => deleteUserClick(u) },
      armed ? t(self ? 'users.delete_self_confirm' : 'users.delete_confirm', { name: u.name }) : t('users.delete')),
  ];
  const rows = [el('tr', { dataset: { testid: `user-${u.name}` } },
    cell('users.h.name', 'name', el('code', {}, u.name), ...(self ? [' ', el('span', { class: 'muted' }, t('users.you'))] : [])),
    cell('users.h.role', 'role', role),
    cell('users.h.created', 'created', u.created_at ? dateText(u.created_at * 1000) : '—'),
    cell('', 'actions', ...actions))];
  if (pwOpen) {
    const input = el('input', { type: 'password', maxlength: '128', autocomplete: 'new-password', placeholder: t('users.pw_new'), 'aria-label': t('users.pw_new'), dataset: { testid: `user-pw-input-${u.name}` } });
    const save = () => setUserPassword(u, input.value);
    input.addEventListener('keydown', (e) => { if (e.key === 'Enter') { e.preventDefault(); save(); } });
    rows.push(el('tr', { class: 'user-pw-row' }, el('td', { colspan: '4', class: 'user-pw' },
      el('div', { class: 'v' }, el('span', {}, t('users.pw_for', { name: u.name })), ' ', input, ' ',
        el('button', { type: 'button', class: 'primary', dataset: { testid: `user-pw-save-${u.name}` }, onclick: save }, t('users.pw_save'))))));
  }
  return rows;
}

// The role: changed at once (one's own too: then the console follows it).
async function setUserRole(u, role) {
  usersStatus('muted', () => t('users.saving'));
  try {
    await api('PUT', `/api/users/${encodeURIComponent(u.name)}`, { role });
    usersStatus('ok', () => t('users.role_set', { name: u.name, role: roleText(role) }));
    if (me && me.kind === 'user' && me.name === u.name) {
      await refreshMe();
      if (me.role !== 'admin') { show('dashboard'); return; }
    }
  } catch (err) {
    usersStatus('error', usersProblem(err, u.name));
  }
  loadUsers();
}

async function setUserPassword(u, password) {
  const rule = passwordRuleKey(password);
  if (rule) { usersStatus('error', () => t(rule)); return; }
  usersStatus('muted', () => t('users.saving'));
  try {
    await api('PUT', `/api/users/${encodeURIComponent(u.name)}`, { password });
    usr.pwOpen = null;
    usersStatus('ok', () => t('users.pw_done', { name: u.name }));
  } catch (err) {
    usersStatus('error', usersProblem(err, u.name));
  }
  loadUsers();
}

function deleteUserClick(u) {
  clearTimeout(usr.armedTimer);
  if (usr.armed !== u.name) {
    usr.armed = u.name;
    usr.armedTimer = setTimeout(() => { usr.armed = null; renderUsers(); }, REMOVE_ARMED_MS);
    renderUsers();
    return;
  }
  usr.armed = null;
  deleteUser(u);
}

async function deleteUser(u) {
  usersStatus('muted', () => t('users.saving'));
  try {
    await api('DELETE', `/api/users/${encodeURIComponent(u.name)}`);
    if (usr.pwOpen === u.name) usr.pwOpen = null;
    usersStatus('ok', () => t('users.deleted', { name: u.name }));
  } catch (err) {
    usersStatus('error', usersProblem(err, u.name));
  }
  loadUsers();
}

$('#user-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const box = $('#uf-status');
  const said = (cls, fn) => { box.className = `status ${cls}`; say(box, fn); };
  const name = $('#uf-name').value.trim();
  const role = $('#uf-role').value;
  const password = $('#uf-password').value;
  if (!USER_NAME_RE.test(name)) { said('error', () => t('users.bad_name')); $('#uf-name').focus(); return; }
  const rule = passwordRuleKey(password);
  if (rule) { said('error', () => t(rule)); $('#uf-password').focus(); return; }
  said('muted', () => t('users.saving'));
  $('#uf-submit').disabled = true;
  try {
    await api('POST', '/api/users', { name, role, password });
    said('ok', () => t('users.added', { name, role: roleText(role) }));
    $('#uf-name').value = '';
    $('#uf-password').value = '';
    loadUsers();
  } catch (err) {
    said('error', usersProblem(err, name));
  } finally {
    $('#uf-submit').disabled = false;
  }
});

onLanguage(() => { if (!$('#view-users').hidden) renderUsers(); });

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
// The live stream is followed from sign-in; the Events view loads the kept history when first
// opened and merges the two (by id). An alarm anywhere raises a toast at once and counts on
// the Events button until it is acknowledged. Acknowledging is an event of its own
// (`alarm_acknowledged`, naming the alarm), so an alarm shows acknowledged from the history
// as from the live stream. An alarm's channel plays in the wall from its row or toast, and
// its clip (a recording of kind alarm naming it) in the view's own player.

/// Events kept in the page (the view shows the newest EVENTS_SHOWN_MAX that pass its filters).
const EVENTS_KEPT_MAX = 5000;
const HISTORY_PAGE = 5000;
const HISTORY_PAGES_MAX = 3;
const TOASTS_MAX = 3;
/// An alarm replayed after a reconnect raises a toast only when this recent.
const TOAST_RECENT_MS = 60000;
/// A toast whose alarm was acknowledged goes after this long.
const TOAST_ACKED_SHOWN_MS = 4000;
/// Devices whose names (and channels' names) are asked for the events, at most.
const NAME_LOOKUPS_MAX = 100;
const RENDER_DELAY_MS = 50;
const evs = {
  list: [], // oldest first
  ids: new Set(),
  acks: new Map(), // alarm id -> its alarm_acknowledged event
  unacked: new Set(), // alarms that came live and are not acknowledged yet
  history: 'none', historyError: null,
  clips: new Map(), // alarm id -> its clip (a record)
  clipLookups: new Map(), // channel id -> 'asking' | 'done'
  nameLookups: new Set(),
  ackOpen: null, ackNote: null, // the alarm whose note is being written, and its input
  ackBusy: new Set(), ackErrors: new Map(),
  rows: new Map(), // event id -> {node, sig}
  renderTimer: null,
};

let lastEventId = null;
async function followEvents() {
  for (;;) {
    try {
      const headers = { ...authHeaders('GET'), Accept: 'text/event-stream' };
      if (lastEventId !== null) headers['Last-Event-ID'] = String(lastEventId);
      const r = await fetch('/api/events', { headers });
      if (r.status === 401) sessionEnded();
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

// An event from the live stream.
function addEvent(e) {
  if (lastEventId === null || e.id > lastEventId) lastEventId = e.id;
  if (!takeEvent(e)) return;
  if ((e.kind === 'device_online' || e.kind === 'device_offline') && e.device_id) deviceState(e.device_id, e.kind === 'device_online');
  if (e.kind === 'alarm') {
    if (!evs.acks.has(e.id)) evs.unacked.add(e.id);
    updateBadge();
    if (Date.now() - e.at_ms < TOAST_RECENT_MS && !evs.acks.has(e.id)) toastAlarm(e);
  }
  scheduleEvents();
}

// Keeps an event (once); false when it was known.
function takeEvent(e) {
  if (!e || evs.ids.has(e.id)) return false;
  evs.ids.add(e.id);
  const list = evs.list;
  if (!list.length || list[list.length - 1].id < e.id) list.push(e);
  else {
    let lo = 0;
    let hi = list.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (list[mid].id < e.id) lo = mid + 1; else hi = mid; }
    list.splice(lo, 0, e);
  }
  while (list.length > EVENTS_KEPT_MAX) evs.ids.delete(list.shift().id);
  const data = e.data || {};
  if (e.kind === 'alarm_acknowledged' && data.alarm_id !== undefined) {
    evs.acks.set(data.alarm_id, e);
    evs.unacked.delete(data.alarm_id);
    evs.ackErrors.delete(data.alarm_id);
    updateBadge();
    ackedToast(data.alarm_id);
  }
  // An alarm clip closed: its channel's clips are asked again.
  if (e.kind === 'recording_closed' && e.channel_id && Array.isArray(data.alarm_ids) && data.alarm_ids.length) {
    evs.clipLookups.delete(e.channel_id);
  }
  return true;
}

function updateBadge() {
  const n = evs.unacked.size;
  const badge = $('#events-badge');
  badge.hidden = n === 0;
  badge.textContent = n > 99 ? '99+' : String(n);
  const button = $('nav button[data-view=events]');
  if (n) button.title = t('nav.events_badge', { n }); else button.removeAttribute('title');
}

function openEvents() {
  renderEvents();
  if (evs.history === 'none' || evs.history === 'failed') loadEventHistory();
}

// The kept history, oldest first, in pages.
async function loadEventHistory() {
  evs.history = 'loading';
  renderEvents();
  try {
    let after = null;
    for (let page = 0; page < HISTORY_PAGES_MAX; page++) {
      const q = after === null ? 'since=0' : `after=${after}`;
      const v = await api('GET', `/api/events?${q}&limit=${HISTORY_PAGE}`);
      const events = (v && v.events) || [];
      for (const e of events) takeEvent(e);
      if (events.length < HISTORY_PAGE) break;
      after = events[events.length - 1].id;
    }
    evs.history = 'done';
    evs.historyError = null;
  } catch (err) {
    evs.history = 'failed';
    evs.historyError = err;
  }
  renderEvents();
}

// The acknowledgements after an alarm (when the live stream is slow to bring one).
async function loadAcks(alarmId) {
  try {
    const v = await api('GET', `/api/events?after=${alarmId}&kind=alarm_acknowledged&limit=${HISTORY_PAGE}`);
    for (const e of (v && v.events) || []) takeEvent(e);
  } catch (_) { /* the live stream brings it */ }
  scheduleEvents();
}

function scheduleEvents() {
  if ($('#view-events').hidden || evs.renderTimer) return;
  evs.renderTimer = setTimeout(() => { evs.renderTimer = null; renderEvents(); }, RENDER_DELAY_MS);
}

// A device's (or channel's) name with its id second, or the id alone.
function nameAndId(id) {
  const name = names.get(id);
  return name && name !== id ? t('ev.name_id', { name, id }) : id;
}
function whereParts(e) {
  const part = (id) => {
    const name = names.get(id);
    return name && name !== id ? [el('span', { class: 'data' }, name), ' ', el('code', { class: 'muted' }, id)] : [el('code', {}, id)];
  };
  const parts = [];
  if (e.device_id) parts.push(...part(e.device_id));
  if (e.channel_id && e.channel_id !== e.device_id) parts.push(' / ', ...part(e.channel_id));
  return parts;
}
const whereText = (e) => [e.device_id && nameAndId(e.device_id), e.channel_id && e.channel_id !== e.device_id && nameAndId(e.channel_id)].filter(Boolean).join(' / ');

// The names of a device and its channels, asked once for the events that name it.
async function lookUpNames(deviceId) {
  if (evs.nameLookups.has(deviceId) || evs.nameLookups.size >= NAME_LOOKUPS_MAX) return;
  evs.nameLookups.add(deviceId);
  try {
    const d = await api('GET', `/api/devices/${deviceId}`);
    if (d && d.device_id) learnDevice(d);
    const { channels } = await api('GET', `/api/devices/${deviceId}/channels?limit=${PAGE}`);
    for (const c of channels || []) if (c.name && c.name !== c.device_id) names.set(c.device_id, c.name);
  } catch (_) { /* ids only */ }
  scheduleEvents();
  refreshToasts();
}

// The alarm clips of a channel, asked once (and again when one closes).
async function lookUpClips(channelId) {
  if (evs.clipLookups.has(channelId)) return;
  evs.clipLookups.set(channelId, 'asking');
  try {
    const { records } = await api('GET', `/api/records?channel=${encodeURIComponent(channelId)}`);
    for (const r of records || []) {
      if (r.kind !== 'alarm' || r.in_progress || !Array.isArray(r.alarm_ids)) continue;
      for (const id of r.alarm_ids) evs.clips.set(id, r);
    }
    evs.clipLookups.set(channelId, 'done');
  } catch (_) {
    evs.clipLookups.delete(channelId);
    return;
  }
  scheduleEvents();
}

const kindText = (k) => (`ev.kind.${k}` in I18N.en ? t(`ev.kind.${k}`) : k);

function eventWhat(e) {
  const data = e.data || {};
  if (e.kind === 'alarm') return t('ev.alarm', { what: data.description || t('ev.alarm_default'), priority: data.priority ?? '—' });
  if (e.kind === 'alarm_acknowledged') {
    const alarm = t('ev.ack_of', { id: data.alarm_id });
    return data.note ? t('ev.ack_event_note', { alarm, by: data.by || '?', note: data.note }) : t('ev.ack_event', { alarm, by: data.by || '?' });
  }
  return data.why || data.reason || data.stream_id || '';
}

function ackText(id) {
  const a = evs.acks.get(id);
  if (!a) return t('ev.acked_unknown');
  const data = a.data || {};
  const params = { by: data.by || '?', time: dateText(a.at_ms), note: data.note };
  return data.note ? t('ev.acked_note', params) : t('ev.acked', params);
}

// Acknowledges an alarm (from its row, with a note, or from its toast).
async function acknowledge(id, note) {
  if (evs.ackBusy.has(id) || evs.acks.has(id)) return;
  evs.ackBusy.add(id);
  evs.ackErrors.delete(id);
  scheduleEvents();
  refreshToasts();
  try {
    await api('POST', `/api/events/${id}/ack`, note ? { note } : {});
    if (evs.ackOpen === id) { evs.ackOpen = null; evs.ackNote = null; }
    await loadAcks(id);
  } catch (err) {
    // Someone acknowledged it first: it is, and the history says by whom.
    if (err instanceof ApiError && err.status === 409) {
      if (evs.ackOpen === id) { evs.ackOpen = null; evs.ackNote = null; }
      await loadAcks(id);
    } else {
      evs.ackErrors.set(id, err);
    }
  } finally {
    evs.ackBusy.delete(id);
    scheduleEvents();
    refreshToasts();
  }
}

// Plays an alarm's channel in the live wall.
function liveView(e) {
  show('wall');
  wallPlay(e.device_id, e.channel_id, names.get(e.channel_id) || e.channel_id);
}

// ---- the Events view ----

function fillSelect(select, options) {
  const keep = select.value;
  const now = options.map(([v, text]) => `${v}\u0000${text}`).join('\u0001');
  if (select.dataset.options !== now) {
    select.replaceChildren(...options.map(([v, text]) => el('option', { value: v }, text)));
    select.dataset.options = now;
  }
  select.value = options.some(([v]) => v === keep) ? keep : '';
}

function renderEvents() {
  if ($('#view-events').hidden) return;
  const kinds = new Set(Object.keys(I18N.en).filter((k) => k.startsWith('ev.kind.')).map((k) => k.slice(8)));
  const deviceIds = new Set();
  for (const e of evs.list) {
    kinds.add(e.kind);
    if (e.device_id) deviceIds.add(e.device_id);
  }
  fillSelect($('#ev-kind'), [['', t('ev.filter.all_kinds')], ...[...kinds].sort().map((k) => [k, kindText(k)])]);
  fillSelect($('#ev-device'), [['', t('ev.filter.all_devices')], ...[...deviceIds].sort().map((id) => [id, nameAndId(id)])]);
  const kind = $('#ev-kind').value;
  const device = $('#ev-device').value;
  const unacked = $('#ev-unacked').checked;
  const shown = [];
  for (let i = evs.list.length - 1; i >= 0 && shown.length < EVENTS_SHOWN_MAX; i--) {
    const e = evs.list[i];
    if (kind && e.kind !== kind) continue;
    if (device && e.device_id !== device) continue;
    if (unacked && (e.kind !== 'alarm' || evs.acks.has(e.id))) continue;
    shown.push(e);
  }
  const note = $('#ev-note');
  note.classList.toggle('error', evs.history === 'failed');
  if (evs.history === 'loading') note.textContent = t('ev.history_loading');
  else if (evs.history === 'failed') note.textContent = `${t('ev.history_failed')} ${readable(evs.historyError)}`;
  else note.textContent = shown.length ? '' : t('ev.none');
  $('#ev-count').textContent = t('ev.shown', { n: shown.length, total: evs.list.length });
  // Rows are kept while what they show is the same, and moved only when the order changes
  // (a note being typed keeps its focus as events arrive).
  const wanted = shown.map((e) => eventRow(e));
  const keep = new Set(shown.map((e) => e.id));
  for (const id of [...evs.rows.keys()]) if (!keep.has(id)) evs.rows.delete(id);
  const log = $('#event-log');
  let at = log.firstChild;
  for (const node of wanted) {
    if (node === at) { at = at.nextSibling; continue; }
    log.insertBefore(node, at);
  }
  while (at) { const next = at.nextSibling; at.remove(); at = next; }
  for (const e of shown) {
    if (e.device_id && !names.has(e.device_id)) lookUpNames(e.device_id);
    if (e.kind === 'alarm' && e.channel_id) lookUpClips(e.channel_id);
  }
}

function eventRow(e) {
  const isAlarm = e.kind === 'alarm';
  const state = isAlarm ? [evs.acks.has(e.id) ? ackText(e.id) : '', evs.ackBusy.has(e.id), evs.ackOpen === e.id, evs.ackErrors.has(e.id) ? readable(evs.ackErrors.get(e.id)) : '', evs.clips.has(e.id), isAdmin] : [];
  const sig = JSON.stringify([lang, whereText(e), eventWhat(e), ...state]);
  const had = evs.rows.get(e.id);
  if (had && had.sig === sig) return had.node;
  const typing = evs.ackNote && document.activeElement === evs.ackNote;
  const li = el('li', { class: `event ${e.kind}${isAlarm && evs.acks.has(e.id) ? ' acked' : ''}`, dataset: { testid: `event-${e.kind}`, eventId: String(e.id), device: e.device_id || '' } },
    el('span', { class: 'muted time' }, timeText(e.at_ms)), ' ',
    el('span', { class: `kind ${e.kind}` }, kindText(e.kind)), ' ',
    el('span', { class: 'where' }, ...whereParts(e)), ' ',
    el('span', { class: 'what' }, eventWhat(e)));
  if (isAlarm) li.append(' ', alarmActions(e));
  evs.rows.set(e.id, { node: li, sig });
  if (had) had.node.replaceWith(li);
  if (typing) evs.ackNote.focus();
  return li;
}

function alarmActions(e) {
  const id = e.id;
  const box = el('span', { class: 'alarm-actions' });
  if (evs.acks.has(id)) {
    box.append(el('span', { class: 'ack-state', dataset: { testid: `ack-state-${id}` } }, ackText(id)));
  } else if (evs.ackBusy.has(id)) {
    box.append(el('span', { class: 'muted', dataset: { testid: `ack-state-${id}` } }, t('ev.acking')));
  } else if (evs.ackOpen === id) {
    if (!evs.ackNote) {
      evs.ackNote = el('input', { type: 'text', maxlength: '500', class: 'ack-note', placeholder: t('ev.ack_note'), dataset: { testid: `ack-note-${id}` } });
      evs.ackNote.addEventListener('keydown', (k) => {
        if (k.key === 'Enter') acknowledge(id, evs.ackNote.value.trim());
        if (k.key === 'Escape') { evs.ackOpen = null; evs.ackNote = null; renderEvents(); }
      });
    }
    evs.ackNote.placeholder = t('ev.ack_note');
    box.append(evs.ackNote,
      el('button', { type: 'button', class: 'primary', dataset: { testid: `ack-send-${id}` }, onclick: () => acknowledge(id, evs.ackNote ? evs.ackNote.value.trim() : '') }, t('ev.ack_send')),
      el('button', { type: 'button', onclick: () => { evs.ackOpen = null; evs.ackNote = null; renderEvents(); } }, t('ev.ack_cancel')));
  } else {
    box.append(el('button', { type: 'button', title: t('ev.ack_title'), dataset: { testid: `ack-${id}` }, onclick: () => {
      evs.ackOpen = id;
      evs.ackNote = null;
      renderEvents();
      if (evs.ackNote) evs.ackNote.focus();
    } }, t('ev.ack')));
  }
  if (evs.ackErrors.has(id)) box.append(el('span', { class: 'error' }, t('ev.ack_failed', { why: readable(evs.ackErrors.get(id)) })));
  if (e.device_id && e.channel_id && e.channel_id !== e.device_id) {
    box.append(el('button', { type: 'button', title: t('ev.live_title'), dataset: { testid: `ev-live-${id}` }, onclick: () => liveView(e) }, t('ev.live')));
  }
  const clip = evs.clips.get(id);
  if (clip) box.append(el('button', { type: 'button', title: t('ev.clip_title'), dataset: { testid: `ev-clip-${id}` }, onclick: () => playClip(e, clip) }, t('ev.clip')));
  return box;
}

for (const id of ['#ev-kind', '#ev-device', '#ev-unacked']) $(id).addEventListener('change', renderEvents);
onLanguage(() => { updateBadge(); renderEvents(); refreshToasts(); if (clipShown) clipTitle(); });

// ---- an alarm's clip, in the Events view's player ----

let clipShown = null; // {e, clip}

function clipTitle() {
  sayKey($('#ev-player-title'), 'ev.player_title', { where: whereText(clipShown.e), time: dateText(clipShown.e.at_ms) });
}

// The clip's MP4 itself (the browser plays it, seekable; its FLV would need to know whether
// the clip has sound).
function playClip(e, clip) {
  stopClip();
  clipShown = { e, clip };
  $('#ev-player').hidden = false;
  clipTitle();
  sayKey($('#ev-player-status'), '');
  const video = $('#ev-video');
  video.onerror = () => {
    if (clipShown && clipShown.clip === clip) sayKey($('#ev-player-status'), 'ev.player_error', { type: video.error ? video.error.code : '', detail: video.error ? video.error.message : '' });
  };
  video.src = new URL(clip.url, location.href).href;
  video.play().catch(() => {});
  $('#ev-player').scrollIntoView({ block: 'nearest' });
}

function stopClip() {
  const video = $('#ev-video');
  video.onerror = null;
  video.removeAttribute('src');
  video.load();
  clipShown = null;
  $('#ev-player').hidden = true;
}
$('#ev-player-close').addEventListener('click', stopClip);

// ---- toasts: an alarm anywhere in the console ----
// One toast per channel: a repeated alarm counts on it. The newest on top, TOASTS_MAX at
// most; each stays until dismissed or acknowledged.

const toasts = new Map(); // device/channel -> {e, n, node, shownAt}

function toastAlarm(e) {
  const key = `${e.device_id || ''}/${e.channel_id || ''}`;
  let x = toasts.get(key);
  if (x) { x.e = e; x.n += 1; } else {
    x = { e, n: 1, node: el('div', { class: 'toast alarm', role: 'alert', dataset: { testid: 'toast-alarm' } }) };
    toasts.set(key, x);
  }
  x.key = key;
  x.node.dataset.alarmId = String(e.id);
  x.node.dataset.shownAt = String(Date.now());
  clearTimeout(x.timer);
  fillToast(x);
  const box = $('#toasts');
  box.prepend(x.node);
  while (toasts.size > TOASTS_MAX) {
    const oldest = [...toasts.values()].find((y) => y.node === box.lastChild) || toasts.values().next().value;
    dropToast(oldest);
  }
  if (e.device_id && !names.has(e.device_id)) lookUpNames(e.device_id);
}

function dropToast(x) {
  clearTimeout(x.timer);
  x.node.remove();
  toasts.delete(x.key);
}

function fillToast(x) {
  const e = x.e;
  const data = e.data || {};
  const acked = evs.acks.has(e.id);
  x.node.classList.toggle('acked', acked);
  const ack = el('button', { type: 'button', class: 'primary', dataset: { testid: 'toast-ack' }, onclick: () => acknowledge(e.id, '') }, evs.ackBusy.has(e.id) ? t('ev.acking') : t('ev.ack'));
  ack.disabled = evs.ackBusy.has(e.id);
  x.node.replaceChildren(
    el('div', { class: 'toast-head' },
      el('strong', {}, `⚠ ${t('toast.alarm')}`),
      ...(x.n > 1 ? [el('span', { class: 'count' }, t('toast.repeat', { n: x.n }))] : []),
      el('span', { class: 'muted' }, timeText(e.at_ms)),
      el('button', { type: 'button', class: 'close', title: t('toast.close'), 'aria-label': t('toast.close'), onclick: () => dropToast(x) }, '✕')),
    el('div', { class: 'toast-where' }, ...whereParts(e)),
    el('div', { class: 'toast-what' }, data.description || t('ev.alarm_default')),
    el('div', { class: 'toast-actions' },
      acked ? el('span', { class: 'ack-state' }, ackText(e.id)) : ack,
      ...(evs.ackErrors.has(e.id) ? [el('span', { class: 'error' }, t('ev.ack_failed', { why: readable(evs.ackErrors.get(e.id)) }))] : []),
      ...(e.device_id && e.channel_id && e.channel_id !== e.device_id
        ? [el('button', { type: 'button', title: t('ev.live_title'), dataset: { testid: 'toast-live' }, onclick: () => liveView(e) }, t('ev.live'))] : []),
      el('button', { type: 'button', dataset: { testid: 'toast-events' }, onclick: () => show('events') }, t('toast.events'))));
}

function refreshToasts() {
  for (const x of toasts.values()) fillToast(x);
}

// An alarm acknowledged (here or elsewhere): its toast says so, then goes.
function ackedToast(alarmId) {
  for (const x of toasts.values()) {
    if (x.e.id !== alarmId) continue;
    fillToast(x);
    clearTimeout(x.timer);
    x.timer = setTimeout(() => dropToast(x), TOAST_ACKED_SHOWN_MS);
  }
}

restoreWall();

// ---- playback of recordings (device and gmv) on one timeline ----

const DAY_S = 86400;
const DOWNLOAD_POLL_MS = 1000;
// `rangesOf`: the channel the ranges shown are of; `loads` numbers the timeline's loads.
const pb = { from: 0, to: 0, ranges: [], rangesOf: null, loads: 0, session: null, player: null, paused: false, range: null };

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
  const load = ++pb.loads;
  pb.to = Math.floor(Date.now() / 1000);
  pb.from = pb.to - DAY_S;
  sayKey($('#pb-note'), 'pb.asking');
  // Another channel chosen: its predecessor's ranges go at once (a click on one would play
  // the new channel at the old one's times).
  if (pb.rangesOf !== channel) {
    pb.ranges = [];
    pb.rangesOf = channel;
    renderTimeline();
  }
  try {
    const line = await api('GET', `/api/channels/${channel}/timeline?start=${pb.from}&end=${pb.to}`);
    if (load !== pb.loads) return; // another load was asked for meanwhile
    pb.ranges = line.ranges;
    const note = () => (line.device.error ? t('pb.device_error', { why: line.device.error }) : (line.device.complete ? '' : t('pb.incomplete')));
    say($('#pb-note'), () => {
      const count = t('pb.count', { n: line.ranges.length });
      return note() ? t('pb.count_note', { count, note: note() }) : count;
    });
    renderTimeline();
  } catch (err) {
    if (load === pb.loads) say($('#pb-note'), () => readable(err));
  }
}

const xOf = (at) => `${((at - pb.from) / (pb.to - pb.from)) * 100}%`;

function renderTimeline() {
  const line = $('#timeline');
  const cursor = $('#pb-cursor');
  const source = (r) => (`pb.source.${r.source}` in I18N.en ? t(`pb.source.${r.source}`) : r.source);
  line.replaceChildren(cursor, ...pb.ranges.map((r, i) => el('div', {
    class: `range ${r.source}`, title: t('pb.range', { source: source(r), start: dateText(r.start * 1000), end: timeText(r.end * 1000) }),
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
  const clicked = timeAt(e.clientX);
  const r = pb.ranges.find((x) => x.start <= clicked && clicked < x.end) || pb.ranges.find((x) => Math.abs(x.start - clicked) < (pb.to - pb.from) / 200);
  if (!r) return;
  const at = Math.max(clicked, r.start);
  if (pb.session && pb.range === r && r.source === 'device') seek(at);
  else playRange(r, at);
});

// Each play is numbered: one still being set up when another starts (or the view is left)
// gives up.
let pbPlays = 0;
function stopPlayback() {
  pbPlays++; // a play still being set up gives up
  if (pb.player) { pb.player.destroy(); pb.player = null; }
  if (pb.session) api('DELETE', `/api/sessions/${pb.session.stream_id}`).catch(() => {});
  pb.session = null;
}

async function playRange(r, at) {
  stopPlayback();
  const play = ++pbPlays;
  const current = () => play === pbPlays;
  pb.range = r;
  pb.paused = false;
  sayKey($('#pb-pause'), 'pb.pause');
  sayKey($('#pb-status'), 'pb.starting');
  const video = $('#pb-video');
  if (video.hasAttribute('src')) { video.removeAttribute('src'); video.load(); } // a node's MP4 before
  try {
    let url;
    // Said after "playing from": why it plays without sound.
    let silent = '';
    if (r.source === 'device') {
      const channel = $('#pb-channel').value;
      const device = devices.find((d) => (channelsOf.get(d.device_id) || []).some((c) => c.device_id === channel));
      const session = await api('POST', `/api/devices/${device.device_id}/channels/${channel}/playback`, { start: at, end: r.end });
      if (!current()) { api('DELETE', `/api/sessions/${session.stream_id}`).catch(() => {}); return; }
      pb.session = session;
      url = new URL(session.play.flv, location.href);
      url.host = location.host;
      // The codecs first: mpegts.js plays no G.711 (the picture is played without it) and
      // H.265 only where the browser decodes it.
      const info = await streamCodecs(session.stream_id, current, (noMedia) => { if (noMedia) sayKey($('#pb-status'), 'wall.no_media', { why: noMedia }); });
      if (!current()) return;
      if (info && info.video_codec === 'h265' && !browserPlaysHevc()) {
        stopPlayback();
        sayKey($('#pb-status'), 'pb.hevc_unplayable');
        return;
      }
      if (info && isG711(info.audio_codec)) silent = 'pb.no_sound_g711';
    } else if (!r.flv) {
      // A file a media node recorded: its MP4 on the node, played from `at`.
      video.src = new URL(r.url, location.href).href;
      video.addEventListener('loadedmetadata', () => { if (current()) video.currentTime = Math.max(0, at - r.start); }, { once: true });
    } else {
      url = new URL(r.flv, location.href);
    }
    if (url) {
      const source = { type: 'flv', isLive: true, url: url.href };
      if (silent) source.hasAudio = false; // its sound tags ignored
      pb.player = mpegts.createPlayer(source, { enableStashBuffer: false });
      pb.player.on(mpegts.Events.ERROR, (type, detail) => { sayKey($('#pb-status'), 'pb.error', { type, detail }); });
      pb.player.attachMediaElement(video);
      pb.player.load();
    }
    video.play().catch(() => {});
    say($('#pb-status'), () => (silent ? `${t('pb.playing_from', { time: timeText(at * 1000) })} · ${t(silent)}` : t('pb.playing_from', { time: timeText(at * 1000) })));
    const cursor = $('#pb-cursor');
    cursor.hidden = false;
    cursor.style.left = xOf(at);
  } catch (err) {
    if (current()) say($('#pb-status'), () => readable(err));
  }
}

// A VCR command to the device's playback; `done` says it in words once the device took it.
// Answers whether it was taken.
async function control(body, done) {
  if (!pb.session) { sayKey($('#pb-status'), 'pb.need_session'); return false; }
  try {
    await api('POST', `/api/sessions/${pb.session.stream_id}/control`, body);
    say($('#pb-status'), done);
    return true;
  } catch (err) {
    say($('#pb-status'), () => readable(err));
    return false;
  }
}

function seek(at) {
  $('#pb-cursor').style.left = xOf(at);
  control({ action: 'seek', position_s: Math.max(0, at - pb.session.start) }, () => t('pb.sought', { time: timeText(at * 1000) }));
}

$('#pb-pause').addEventListener('click', async () => {
  const pausing = !pb.paused;
  if (await control({ action: pausing ? 'pause' : 'resume' }, () => t(pausing ? 'pb.paused' : 'pb.playing'))) {
    pb.paused = pausing;
    sayKey($('#pb-pause'), pausing ? 'pb.resume' : 'pb.pause');
  }
});
$('#pb-speed').addEventListener('change', (e) => {
  const x = e.target.value;
  control({ action: 'speed', scale: Number(x) }, () => t('pb.speed_set', { x }));
});
$('#pb-load').addEventListener('click', loadTimeline);
// The timeline's titles in the new language.
onLanguage(() => { if (pb.ranges.length) renderTimeline(); });
$('#pb-channel').addEventListener('change', loadTimeline);

$('#pb-download').addEventListener('click', async () => {
  const r = pb.range;
  if (!r || r.source !== 'device') { sayKey($('#pb-status'), 'pb.need_range'); return; }
  const channel = $('#pb-channel').value;
  const device = devices.find((d) => (channelsOf.get(d.device_id) || []).some((c) => c.device_id === channel));
  try {
    const d = await api('POST', `/api/devices/${device.device_id}/channels/${channel}/download`, { start: r.start, end: r.end });
    const bar = el('progress', { max: '1', value: '0' });
    const text = say(el('span'), () => ` ${t('pb.dl.starting')}`);
    const when = say(el('span'), () => `${dateText(r.start * 1000)} `);
    $('#downloads').prepend(el('li', { dataset: { testid: `download-${d.id}` } }, when, bar, text));
    const stateText = (state) => (`pb.dl.state.${state}` in I18N.en ? t(`pb.dl.state.${state}`) : state);
    const poll = setInterval(async () => {
      try {
        const now = await api('GET', `/api/downloads/${d.id}`);
        bar.value = now.progress;
        say(text, () => ` ${t('pb.dl.progress', { pct: Math.floor(now.progress * 100), state: stateText(now.state) })}`);
        if (now.state === 'complete') {
          say(text, () => [' ', el('a', { href: now.url, download: now.file }, t('pb.dl.save'))]);
        }
        if (!['running', 'resuming', 'finishing'].includes(now.state)) clearInterval(poll);
      } catch (err) {
        say(text, () => readable(err));
        clearInterval(poll);
      }
    }, DOWNLOAD_POLL_MS);
  } catch (err) {
    say($('#pb-status'), () => readable(err));
  }
});

// ---- recordings (录像): gmv's own recordings of a channel or a stream over a day ----
// One channel (from the device tree's data, or any channel with recordings that day) or one
// stream, a date and a time range (today, all day, unless chosen). The timeline shows the
// continuous recordings (green, top lane) and the alarm clips (orange, bottom lane) of the part
// of the range in view (zoomed between the range and an hour); a click plays from there: a
// continuous file as FLV from `?start=` seconds into it (mpegts.js, as Playback does), an alarm
// clip as its MP4 from that time. The files in view are listed (played, downloaded, deleted);
// the part in view is exported as one MP4 (GET /api/records/export, with the key: fetched and
// saved from memory).

/// Records asked per request, and at most in all (gmv lists 10 000 at most).
const REC_PAGE = 1000;
const REC_FETCH_MAX = 10000;
/// Rows of the file list drawn at most (the rest: zoom in).
const REC_ROWS_MAX = 200;
/// The zoom levels below the whole range, and the least.
const REC_ZOOMS_MS = [12, 6, 3, 1].map((h) => h * 3600000);
/// Continuous files closer than this many pixels are drawn as one span.
const REC_MERGE_PX = 2;
/// Minutes between the axis' labels, the least that leaves each label about this many pixels.
const REC_TICK_STEPS_MIN = [1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720];
const REC_TICK_PX = 64;
/// The next file plays when one ends if it starts within this of the end.
const REC_NEXT_GAP_MS = 3000;
/// A click near a file's end plays at least this much of it (half of a shorter one).
const REC_LEFT_TO_PLAY_MS = 3000;
const rec = {
  tab: 'files',
  range: null, // {from, to} ms: what was asked
  view: null, // {from, to} ms: the part in view
  source: null, // {kind: 'channel'|'stream', id}
  records: [],
  total: 0,
  failed: null,
  loading: false,
  load: 0,
  day: { channels: new Set(), streams: new Set() }, // sources with recordings on the date
  liveStreams: new Set(),
  playing: null, // {r, base: wall ms of the video's time 0, at}
  player: null,
  armed: null,
  armTimer: null,
  exporting: null, // AbortController of the export under way
  exportUrl: null,
};

const pad2 = (n) => String(n).padStart(2, '0');
const hm = (ms) => { const d = new Date(ms); return `${pad2(d.getHours())}:${pad2(d.getMinutes())}`; };
const hms = (ms) => `${hm(ms)}:${pad2(new Date(ms).getSeconds())}`;
const dayValue = (ms) => { const d = new Date(ms); return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}`; };
/// The end of a span: midnight after its start is 24:00.
const endText = (ms, from) => (ms > from && hms(ms) === '00:00:00' ? '24:00' : hm(ms));
function lengthText(ms) {
  const s = Math.round(ms / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h ? `${h}:${pad2(m)}:${pad2(s % 60)}` : `${m}:${pad2(s % 60)}`;
}
function sizeText(bytes) {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let v = Number(bytes) || 0;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${i && v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

// A datum (a name, an id, the engine's words) inside a sentence: as it is, marked as data.
const dataSpan = (v) => el('span', { class: 'data' }, String(v));
// A sentence of `key` as nodes: a parameter that is a node goes in as it is (data stays data).
function sentence(key, params = {}) {
  const parts = t(key).split(/\{(\w+)\}/);
  return parts.map((p, i) => {
    if (i % 2 === 0) return p;
    const v = params[p];
    if (v instanceof Node) return v;
    return v === undefined ? `{${p}}` : String(v);
  }).filter((p) => p !== '');
}
// readable(), with gmv's own words as data.
function readableNodes(err) {
  if (err instanceof ApiError && err.message) {
    const key = `err.${err.code}`;
    const what = err.code && key in I18N.en ? t(key, { status: err.status }) : t('err.status', { status: err.status });
    return sentence('err.detail', { what, detail: dataSpan(err.message) });
  }
  return [readable(err)];
}

const isAlarmClip = (r) => r.kind === 'alarm';
const recStart = (r) => r.start_unix_ms;
/// A file being written has no length yet: it reaches now.
const recEnd = (r) => (r.in_progress ? Math.max(r.start_unix_ms + (r.duration_ms || 0), Date.now()) : r.start_unix_ms + r.duration_ms);
const stemOf = (r) => r.file.replace(/\.mp4$/, '');

function recSource() {
  const v = $('#rec-source').value;
  if (!v) return null;
  const at = v.indexOf(':');
  return { kind: v.slice(0, at) === 'c' ? 'channel' : 'stream', id: v.slice(at + 1) };
}
const sourceParam = (s) => `${s.kind}=${encodeURIComponent(s.id)}`;
// The source in a sentence: the channel's name and id, or the stream's id.
function sourceNode(s) {
  if (s.kind === 'channel') {
    const name = names.get(s.id);
    return el('span', {}, ...(name ? [dataSpan(name), ' '] : []), el('code', {}, s.id));
  }
  return el('span', {}, ...sentence('rec.src.stream', { id: el('code', {}, s.id) }));
}

// The chosen range in ms (from the start of its first minute to the end of its last), or why not.
function recRange() {
  const date = $('#rec-date').value;
  if (!date) return { error: 'rec.err.no_date' };
  const from = new Date(`${date}T${$('#rec-from').value || '00:00'}`).getTime();
  const to = new Date(`${date}T${$('#rec-to').value || '23:59'}`).getTime() + 60000;
  if (!Number.isFinite(from) || !Number.isFinite(to)) return { error: 'rec.err.bad_time' };
  if (to <= from) return { error: 'rec.err.end_before_start' };
  return { from, to };
}

// The channels of the device tree (asked for those not asked yet).
async function loadRecChannels() {
  await loadDevices();
  await Promise.all(devices.filter((d) => !channelsOf.get(d.device_id)).slice(0, PLAYBACK_DEVICES_MAX).map(loadChannels));
}

// What has recordings on the date (a first page of them), and the streams open now.
async function loadRecSources() {
  const range = recRange();
  const day = { channels: new Set(), streams: new Set() };
  if (!range.error) {
    try {
      const page = await api('GET', `/api/records?from=${Math.floor(range.from / 1000)}&to=${Math.ceil(range.to / 1000)}&limit=${REC_PAGE}`);
      for (const r of page.records) {
        if (r.channel_id) day.channels.add(r.channel_id);
        else day.streams.add(r.stream_id);
      }
    } catch (_) { /* the list of the source chosen says why */ }
  }
  const live = new Set();
  try {
    const [{ streams }, sessions] = await Promise.all([api('GET', `/api/streams?limit=${PAGE}`), channelSessions()]);
    for (const s of streams) if (!sessions.has(s.stream_id)) live.add(s.stream_id);
    // A file being written names no channel yet: a channel's session's stream is the channel.
    for (const [stream, channel] of sessions) {
      if (day.streams.delete(stream)) day.channels.add(channel);
    }
  } catch (_) { /* no streams offered */ }
  rec.day = day;
  rec.liveStreams = live;
}

// The streams of the channels' live sessions now: stream id -> channel id.
async function channelSessions() {
  try {
    const { sessions } = await api('GET', '/api/sessions');
    return new Map(sessions.filter((s) => s.kind === 'live').map((s) => [s.stream_id, s.channel_id]));
  } catch (_) {
    return new Map(); // SIP disabled: no channel
  }
}

function fillRecSources() {
  const select = $('#rec-source');
  const keep = select.value;
  const channels = [];
  const seen = new Set();
  for (const d of devices) {
    for (const c of channelsOf.get(d.device_id) || []) {
      if (seen.has(c.device_id)) continue;
      seen.add(c.device_id);
      channels.push({ id: c.device_id, name: c.name && c.name !== c.device_id ? c.name : '' });
    }
  }
  for (const id of rec.day.channels) {
    if (!seen.has(id)) {
      seen.add(id);
      channels.push({ id, name: names.get(id) || '' });
    }
  }
  const recorded = (c) => rec.day.channels.has(c.id);
  channels.sort((a, b) => Number(recorded(b)) - Number(recorded(a)));
  const streams = [...new Set([...rec.day.streams, ...rec.liveStreams])].sort();
  const option = (value, label, marked) => el('option', { value }, marked ? t('rec.src.recorded', { label }) : label);
  const groups = [];
  if (channels.length) {
    groups.push(el('optgroup', { label: t('rec.src.channels') },
      ...channels.map((c) => option(`c:${c.id}`, c.name ? `${c.name} (${c.id})` : c.id, recorded(c)))));
  }
  if (streams.length) {
    groups.push(el('optgroup', { label: t('rec.src.streams') },
      ...streams.map((id) => option(`s:${id}`, t('rec.src.stream', { id }), rec.day.streams.has(id)))));
  }
  select.replaceChildren(...groups);
  if (!groups.length) select.append(el('option', { value: '' }, t('rec.src.none')));
  const values = [...select.options].map((o) => o.value);
  // The operator's choice stays; otherwise the first with recordings that day.
  if (keep && values.includes(keep) && (rec.sourceChosen || rec.source)) select.value = keep;
  else {
    const channel = channels.find(recorded);
    const stream = streams.find((id) => rec.day.streams.has(id));
    select.value = channel ? `c:${channel.id}` : stream ? `s:${stream}` : values[0] || '';
  }
}

function openRecordings() {
  if (!$('#rec-date').value) $('#rec-date').value = dayValue(Date.now());
  fillRecSources();
  renderRec();
  loadRecChannels()
    .then(loadRecSources)
    .then(() => {
      fillRecSources();
      fillAssign();
      if (rec.tab === 'files') loadRecordings();
    });
  if (rec.tab === 'plans') startPlans();
}

function leaveRecordings() {
  stopRecPlayer();
  stopPlans();
}

function showRecTab(tab) {
  rec.tab = tab;
  for (const b of document.querySelectorAll('[data-rec-tab]')) {
    const on = b.dataset.recTab === tab;
    b.classList.toggle('active', on);
    b.setAttribute('aria-selected', String(on));
  }
  $('#rec-files-pane').hidden = tab !== 'files';
  $('#rec-plans-pane').hidden = tab !== 'plans';
  if (tab === 'plans') {
    stopRecPlayer();
    fillAssign();
    startPlans();
  } else {
    stopPlans();
    if (!rec.range) loadRecordings();
    else renderRec(); // measured again now that it is shown
  }
}
for (const b of document.querySelectorAll('[data-rec-tab]')) b.addEventListener('click', () => showRecTab(b.dataset.recTab));

// The list of the source and range chosen (`keepView`: the part in view stays, when in range).
async function loadRecordings({ keepView = false } = {}) {
  const load = ++rec.load;
  const source = recSource();
  const range = recRange();
  const note = $('#rec-note');
  note.classList.remove('error');
  if (range.error || !source) {
    stopRecPlayer();
    rec.records = [];
    rec.range = null;
    rec.view = null;
    rec.loading = false;
    renderRec();
    sayKey(note, range.error || 'rec.err.no_source');
    note.classList.add('error');
    return;
  }
  const sameView = keepView && rec.view && rec.range && rec.range.from === range.from && rec.range.to === range.to;
  rec.source = source;
  rec.range = range;
  if (!sameView) rec.view = { ...range };
  rec.loading = true;
  sayKey(note, 'rec.loading');
  try {
    const found = [];
    let total = Infinity;
    while (found.length < Math.min(total, REC_FETCH_MAX)) {
      const page = await api('GET', `/api/records?${sourceParam(source)}&from=${Math.floor(range.from / 1000)}&to=${Math.ceil(range.to / 1000)}&offset=${found.length}&limit=${REC_PAGE}`);
      if (load !== rec.load) return;
      total = page.total;
      found.push(...page.records);
      if (!page.records.length) break;
    }
    // The channel's file being written names no channel yet: asked by its session's stream.
    if (source.kind === 'channel') {
      const streams = [...(await channelSessions())].filter(([, channel]) => channel === source.id).map(([stream]) => stream);
      for (const stream of streams) {
        const page = await api('GET', `/api/records?stream=${encodeURIComponent(stream)}&from=${Math.floor(range.from / 1000)}&to=${Math.ceil(range.to / 1000)}&limit=${REC_PAGE}`).catch(() => ({ records: [] }));
        found.push(...page.records.filter((r) => r.in_progress && !found.some((x) => x.file === r.file)));
      }
      if (load !== rec.load) return;
    }
    rec.records = found.filter((r) => recEnd(r) > range.from && recStart(r) < range.to).sort((a, b) => recStart(a) - recStart(b));
    rec.total = total;
    rec.failed = null;
  } catch (err) {
    if (load !== rec.load) return;
    rec.records = [];
    rec.failed = err;
  }
  rec.loading = false;
  if (rec.playing && !rec.records.some((r) => r.file === rec.playing.r.file)) stopRecPlayer();
  renderRec();
}

function renderRec() {
  renderRecNote();
  renderRecTimeline();
  renderRecFiles();
  renderRecExport();
}

function renderRecNote() {
  const note = $('#rec-note');
  if (!rec.range || rec.loading) return;
  const err = rec.failed;
  note.classList.toggle('error', !!err);
  const source = rec.source;
  const when = () => ({ source: sourceNode(source), date: new Date(rec.range.from).toLocaleDateString(dateLocale()), from: hm(rec.range.from), to: endText(rec.range.to, rec.range.from) });
  if (err) {
    say(note, () => {
      if (err instanceof ApiError && err.status === 401) return t('rec.err.unauthorized');
      if (err instanceof ApiError && err.status === 403) return t('rec.err.forbidden');
      if (err instanceof NetworkError) return t('rec.err.network');
      return [t('rec.err.load'), t('common.sentence_sep'), ...readableNodes(err)];
    });
    return;
  }
  if (!rec.records.length) {
    say(note, () => [...sentence('rec.none', when()), t('common.sentence_sep'), ...sentence('rec.none_hint', { config: el('code', {}, 'record.all') })]);
    return;
  }
  say(note, () => {
    const alarms = rec.records.filter(isAlarmClip).length;
    const recorded = rec.records.filter((r) => !isAlarmClip(r)).reduce((sum, r) => sum + Math.max(0, Math.min(recEnd(r), rec.range.to) - Math.max(recStart(r), rec.range.from)), 0);
    const parts = sentence(rec.records.length === 1 ? 'rec.count_one' : 'rec.count', { ...when(), n: rec.records.length, alarms, length: lengthText(recorded) });
    if (rec.total > rec.records.length && rec.total >= REC_FETCH_MAX) parts.push(t('common.sentence_sep'), t('rec.truncated', { n: rec.records.length }));
    return parts;
  });
}

const recPct = (ms) => ((ms - rec.view.from) / (rec.view.to - rec.view.from)) * 100;

function renderRecTimeline() {
  const line = $('#rec-timeline');
  const cursor = $('#rec-cursor');
  const axis = $('#rec-axis');
  const span = $('#rec-span');
  const buttons = ['#rec-zoom-in', '#rec-zoom-out', '#rec-pan-back', '#rec-pan-on'].map((s) => $(s));
  if (!rec.view) {
    line.replaceChildren(cursor);
    axis.replaceChildren();
    sayKey(span, '');
    for (const b of buttons) b.disabled = true;
    return;
  }
  const { from, to } = rec.view;
  const width = line.clientWidth || 800;
  const msPerPx = (to - from) / width;
  const inView = rec.records.filter((r) => recEnd(r) > from && recStart(r) < to);
  const lanes = { cont: [], alarm: [] };
  for (const r of inView) {
    const lane = isAlarmClip(r) ? lanes.alarm : lanes.cont;
    const s = Math.max(recStart(r), from);
    const e = Math.min(recEnd(r), to);
    const last = lane[lane.length - 1];
    if (last && s - last.e <= msPerPx * REC_MERGE_PX && last.live === !!r.in_progress) {
      last.e = Math.max(last.e, e);
      last.n += 1;
    } else {
      lane.push({ s, e, n: 1, live: !!r.in_progress });
    }
  }
  const seg = (x, cls, testid) => el('div', {
    class: `seg ${cls}${x.live ? ' live' : ''}`, dataset: { testid },
    style: `left:${recPct(x.s)}%;width:${recPct(x.e) - recPct(x.s)}%`,
    title: t(cls === 'alarm' ? 'rec.seg.alarm' : 'rec.seg.cont', { start: hms(x.s), end: hms(x.e), n: x.n }),
  });
  line.replaceChildren(cursor, ...lanes.cont.map((x, i) => seg(x, 'cont', `rec-seg-${i}`)), ...lanes.alarm.map((x, i) => seg(x, 'alarm', `rec-alarm-${i}`)));
  placeRecCursor();
  // The axis: local times at round steps.
  const most = Math.max(2, Math.floor(width / REC_TICK_PX));
  const step = (REC_TICK_STEPS_MIN.find((m) => (to - from) / (m * 60000) <= most) || 720) * 60000;
  const midnight = new Date(from);
  midnight.setHours(0, 0, 0, 0);
  const labels = [];
  for (let tick = midnight.getTime() + Math.ceil((from - midnight.getTime()) / step) * step; tick <= to; tick += step) {
    const pct = recPct(tick);
    labels.push(el('span', { class: pct < 4 ? 'first' : pct > 96 ? 'last' : '', style: `left:${pct}%` }, endText(tick, from)));
  }
  axis.replaceChildren(...labels);
  say(span, () => t('rec.span', { from: hm(from), to: endText(to, from), length: lengthText(to - from) }));
  const full = rec.range.to - rec.range.from;
  const [zin, zout, back, on] = buttons;
  zin.disabled = to - from <= REC_ZOOMS_MS[REC_ZOOMS_MS.length - 1];
  zout.disabled = to - from >= full;
  back.disabled = from <= rec.range.from;
  on.disabled = to >= rec.range.to;
}

function placeRecCursor() {
  const cursor = $('#rec-cursor');
  const p = rec.playing;
  const at = p && (p.pos ?? p.at);
  if (!p || !rec.view || at < rec.view.from || at > rec.view.to) { cursor.hidden = true; return; }
  cursor.hidden = false;
  cursor.style.left = `${recPct(at)}%`;
}

// The part of the range in view: `span` long from `start`, kept inside the range.
function setRecView(start, span) {
  const { from, to } = rec.range;
  const length = Math.min(span, to - from);
  const s = Math.max(from, Math.min(start, to - length));
  rec.view = { from: s, to: s + length };
  renderRec();
}

// One zoom level in (dir 1) or out (-1): around `around` (wall ms, kept where it is on
// screen), else around what plays, else around the recordings in view.
function zoomRec(dir, around) {
  if (!rec.view) return;
  const full = rec.range.to - rec.range.from;
  const span = rec.view.to - rec.view.from;
  const levels = [full, ...REC_ZOOMS_MS.filter((z) => z < full)];
  const next = dir > 0 ? levels.find((z) => z < span) : [...levels].reverse().find((z) => z > span);
  if (!next) return;
  if (around !== undefined) {
    setRecView(around - (around - rec.view.from) * (next / span), next);
    return;
  }
  const p = rec.playing;
  const at = p && (p.pos ?? p.at);
  const inView = rec.records.filter((r) => recEnd(r) > rec.view.from && recStart(r) < rec.view.to);
  let center = (rec.view.from + rec.view.to) / 2;
  if (at >= rec.view.from && at <= rec.view.to) center = at;
  else if (inView.length) center = (Math.max(rec.view.from, Math.min(...inView.map(recStart))) + Math.min(rec.view.to, Math.max(...inView.map(recEnd)))) / 2;
  setRecView(center - next / 2, next);
}
$('#rec-zoom-in').addEventListener('click', () => zoomRec(1));
$('#rec-zoom-out').addEventListener('click', () => zoomRec(-1));
// The wheel over the timeline zooms around the pointer (a level per turn, not per event).
let recWheelAt = 0;
$('#rec-timeline').addEventListener('wheel', (e) => {
  if (!rec.view || !e.deltaY) return;
  e.preventDefault();
  if (Date.now() - recWheelAt < 250) return;
  recWheelAt = Date.now();
  const box = $('#rec-timeline').getBoundingClientRect();
  zoomRec(e.deltaY < 0 ? 1 : -1, rec.view.from + ((e.clientX - box.left) / box.width) * (rec.view.to - rec.view.from));
}, { passive: false });
$('#rec-pan-back').addEventListener('click', () => rec.view && setRecView(rec.view.from - (rec.view.to - rec.view.from) / 2, rec.view.to - rec.view.from));
$('#rec-pan-on').addEventListener('click', () => rec.view && setRecView(rec.view.from + (rec.view.to - rec.view.from) / 2, rec.view.to - rec.view.from));

// A click on the timeline plays what is there: in the bottom lane an alarm clip, else the
// continuous recording (or the nearest start just after, for a click beside a thin span).
$('#rec-timeline').addEventListener('click', (e) => {
  if (!rec.view) return;
  const box = $('#rec-timeline').getBoundingClientRect();
  const at = rec.view.from + ((e.clientX - box.left) / box.width) * (rec.view.to - rec.view.from);
  const alarmLane = e.clientY - box.top > box.height * 0.62;
  // A span a few pixels wide is hit within this much (a short clip is one or two pixels).
  const slack = ((rec.view.to - rec.view.from) / box.width) * 6;
  const hit = (alarm, pad) => rec.records.filter((r) => isAlarmClip(r) === alarm && recStart(r) - pad <= at && at < recEnd(r) + pad);
  const near = rec.records.filter((r) => Math.abs(recStart(r) - at) <= slack || Math.abs(recEnd(r) - at) <= slack)
    .sort((a, b) => Math.abs(recStart(a) - at) - Math.abs(recStart(b) - at));
  const r = (alarmLane && (hit(true, 0)[0] || hit(true, slack)[0])) || hit(false, 0).pop() || hit(true, 0)[0] || near[0];
  if (!r) {
    say($('#rec-status'), () => t('rec.nothing_at', { time: hms(at) }));
    return;
  }
  // From the point clicked, leaving something to see of a short file.
  const left = Math.min(REC_LEFT_TO_PLAY_MS, (recEnd(r) - recStart(r)) / 2);
  playRecording(r, Math.max(recStart(r), Math.min(at, recEnd(r) - left)));
});

function stopRecPlayer() {
  if (rec.player) {
    rec.player.destroy();
    rec.player = null;
  }
  const video = $('#rec-video');
  video.onerror = null;
  if (video.getAttribute('src') !== null || rec.playing) {
    video.removeAttribute('src');
    video.load();
  }
  const was = rec.playing;
  rec.playing = null;
  $('#rec-cursor').hidden = true;
  if (was) renderRecFiles();
}

const recKindText = (r) => t(isAlarmClip(r) ? 'rec.kind.alarm' : 'rec.kind.cont');

// Plays `r` from `at` (wall ms).
function playRecording(r, at) {
  stopRecPlayer();
  if (!rec.view) return;
  const video = $('#rec-video');
  const status = $('#rec-status');
  status.classList.remove('error');
  const offsetS = Math.max(0, Math.floor((at - recStart(r)) / 1000));
  // An alarm clip, or a file a media node recorded (no FLV of it), plays as its MP4.
  const mp4 = isAlarmClip(r) || !r.flv || !(window.mpegts && mpegts.isSupported());
  const playing = { r, at, base: mp4 ? recStart(r) : recStart(r) + offsetS * 1000 };
  rec.playing = playing;
  const failed = (type, detail) => {
    if (rec.playing !== playing) return;
    status.classList.add('error');
    sayKey(status, 'rec.play_error', { type, detail });
  };
  video.onerror = () => failed(video.error ? video.error.code : '', video.error ? video.error.message : '');
  if (mp4) {
    video.src = new URL(r.url, location.href).href;
    video.addEventListener('loadedmetadata', () => {
      if (rec.playing === playing) video.currentTime = (at - recStart(r)) / 1000;
    }, { once: true });
  } else {
    const url = new URL(r.flv, location.href);
    url.searchParams.set('start', String(offsetS));
    rec.player = mpegts.createPlayer({ type: 'flv', isLive: true, url: url.href }, { enableStashBuffer: false });
    rec.player.on(mpegts.Events.ERROR, (type, detail) => failed(type, detail));
    rec.player.attachMediaElement(video);
    rec.player.load();
  }
  video.play().catch(() => {});
  say(status, () => t('rec.playing', { kind: recKindText(r), time: dateText(at) }));
  const span = rec.view.to - rec.view.from;
  if (at < rec.view.from || at > rec.view.to) setRecView(at - span / 2, span);
  else {
    placeRecCursor();
    renderRecFiles();
  }
}

$('#rec-video').addEventListener('timeupdate', () => {
  const p = rec.playing;
  if (!p) return;
  p.pos = p.base + $('#rec-video').currentTime * 1000;
  placeRecCursor();
});
// A continuous file played to its end: the next one, when it follows on.
$('#rec-video').addEventListener('ended', () => {
  const p = rec.playing;
  if (!p) return;
  const end = recEnd(p.r);
  const next = !isAlarmClip(p.r) && rec.records.find((r) => !isAlarmClip(r) && recStart(r) > recStart(p.r) && recStart(r) <= end + REC_NEXT_GAP_MS);
  if (next) playRecording(next, recStart(next));
  else sayKey($('#rec-status'), 'rec.ended');
});

function renderRecFiles() {
  const body = $('#rec-rows');
  const note = $('#rec-files-note');
  if (!rec.view) {
    body.replaceChildren();
    sayKey(note, '');
    return;
  }
  const { from, to } = rec.view;
  const list = rec.records.filter((r) => recEnd(r) > from && recStart(r) < to);
  const shown = list.slice(0, REC_ROWS_MAX);
  body.replaceChildren(...shown.map(recRow));
  if (!list.length && rec.records.length) sayKey(note, 'rec.none_in_view');
  else if (shown.length < list.length) sayKey(note, 'rec.rows_more', { n: shown.length, total: list.length });
  else sayKey(note, '');
}

function recRow(r) {
  const stem = stemOf(r);
  const date = $('#rec-date').value;
  const start = dayValue(recStart(r)) === date ? hms(recStart(r)) : dateText(recStart(r));
  let kind = t('rec.kind.cont');
  if (isAlarmClip(r)) kind = r.alarm_ids && r.alarm_ids.length ? t('rec.kind.alarm_ids', { ids: r.alarm_ids.map((i) => `#${i}`).join(t('common.list_sep')) }) : t('rec.kind.alarm');
  if (r.in_progress) kind = t('rec.kind.writing', { kind });
  const armed = rec.armed === r.file;
  const del = el('button', {
    type: 'button', class: armed ? 'danger' : '', dataset: { testid: `rec-del-${stem}` },
    title: t(r.in_progress ? 'rec.delete_writing' : 'rec.delete_title'), onclick: () => deleteRecording(r),
  }, t(armed ? 'rec.delete_confirm' : 'rec.delete'));
  if (r.in_progress) del.disabled = true;
  const playing = rec.playing && rec.playing.r.file === r.file;
  return el('tr', { class: `${playing ? 'playing' : ''} ${isAlarmClip(r) ? 'alarm' : ''}`, dataset: { testid: `rec-row-${stem}` } },
    el('td', { class: 'num' }, start),
    el('td', { class: 'num' }, r.in_progress ? '—' : lengthText(r.duration_ms)),
    el('td', { class: 'num' }, sizeText(r.bytes)),
    el('td', { class: `kind ${isAlarmClip(r) ? 'alarm' : ''}` }, kind),
    el('td', { class: 'actions' },
      el('button', { type: 'button', title: t('rec.play_title'), dataset: { testid: `rec-play-${stem}` }, onclick: () => playRecording(r, recStart(r)) }, '▶'), ' ',
      el('a', { class: 'button', href: r.url, download: r.file, title: t('rec.download_title'), dataset: { testid: `rec-dl-${stem}` } }, t('rec.download')), ' ',
      del));
}

// Deleted on the second click within a few seconds (the first asks).
async function deleteRecording(r) {
  const status = $('#rec-files-status');
  clearTimeout(rec.armTimer);
  if (rec.armed !== r.file) {
    rec.armed = r.file;
    rec.armTimer = setTimeout(() => { rec.armed = null; renderRecFiles(); }, REMOVE_ARMED_MS);
    renderRecFiles();
    return;
  }
  rec.armed = null;
  status.classList.remove('ok', 'error');
  try {
    await api('DELETE', `/api/records/${encodeURIComponent(r.file)}`);
    if (rec.playing && rec.playing.r.file === r.file) stopRecPlayer();
    rec.records = rec.records.filter((x) => x.file !== r.file);
    status.classList.add('ok');
    sayKey(status, 'rec.deleted', { time: dateText(recStart(r)) });
    renderRec();
  } catch (err) {
    status.classList.add('error');
    const key = err instanceof ApiError && { 401: 'rec.err.unauthorized', 403: 'rec.err.delete_forbidden', 404: 'rec.err.delete_gone', 409: 'rec.err.delete_writing' }[err.status];
    say(status, () => (key ? t(key) : [t('rec.err.delete'), t('common.sentence_sep'), ...readableNodes(err)]));
    renderRecFiles();
    if (err instanceof ApiError && err.status === 404) loadRecordings({ keepView: true });
  }
}

// Closed continuous files in the part shown: what an export of it takes.
const exportable = () => rec.view && rec.records.some((r) => !isAlarmClip(r) && !r.in_progress && recEnd(r) > rec.view.from && recStart(r) < rec.view.to);

function renderRecExport() {
  const button = $('#rec-export');
  button.disabled = !rec.exporting && !exportable();
  say(button, () => {
    if (rec.exporting) return t('rec.export_cancel');
    if (!rec.view) return t('rec.export_none');
    const span = { from: hm(rec.view.from), to: endText(rec.view.to, rec.view.from) };
    return t(exportable() ? 'rec.export' : 'rec.export_nothing', span);
  });
}

// The part in view as one MP4: fetched with the key (progress said), then saved.
async function exportRange() {
  if (rec.exporting) { rec.exporting.abort(); return; }
  if (!rec.view || !rec.source) return;
  const status = $('#rec-export-status');
  status.classList.remove('ok', 'error');
  const { from, to } = rec.view;
  const source = rec.source;
  const span = { from: hm(from), to: endText(to, from) };
  if (!exportable()) {
    status.classList.add('error');
    sayKey(status, 'rec.export.nothing', span);
    return;
  }
  const abort = new AbortController();
  rec.exporting = abort;
  renderRecExport();
  sayKey(status, 'rec.export.asking', span);
  try {
    let r;
    try {
      r = await fetch(`/api/records/export?${sourceParam(source)}&from_ms=${Math.floor(from)}&to_ms=${Math.floor(to)}`, { headers: authHeaders('GET'), signal: abort.signal });
    } catch (err) {
      if (abort.signal.aborted) throw err;
      throw new NetworkError(String(err && err.message || err));
    }
    if (r.status === 401) sessionEnded();
    if (!r.ok) {
      let v = null;
      try { v = await r.json(); } catch (_) { /* not JSON */ }
      throw new ApiError(r.status, v && (v.code || v.error), v && v.message);
    }
    const name = (/filename="([^"]+)"/.exec(r.headers.get('content-disposition') || '') || [])[1] || `${source.id}_${Math.floor(from / 1000)}_${Math.floor(to / 1000)}.mp4`;
    const chunks = [];
    let bytes = 0;
    let said = 0;
    const reader = r.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      bytes += value.length;
      if (Date.now() - said > 250) {
        said = Date.now();
        sayKey(status, 'rec.export.progress', { ...span, size: sizeText(bytes) });
      }
    }
    if (!bytes) throw new Error(t('rec.export.empty'));
    if (rec.exportUrl) URL.revokeObjectURL(rec.exportUrl);
    rec.exportUrl = URL.createObjectURL(new Blob(chunks, { type: 'video/mp4' }));
    const link = () => el('a', { href: rec.exportUrl, download: name, dataset: { testid: 'rec-export-link', bytes: String(bytes) } }, t('rec.export.again'));
    const a = link();
    a.hidden = true;
    document.body.append(a);
    a.click();
    a.remove();
    status.classList.add('ok');
    say(status, () => [...sentence('rec.export.done', { size: sizeText(bytes), file: el('code', {}, name) }), ' ', link()]);
  } catch (err) {
    status.classList.add('error');
    if (abort.signal.aborted) sayKey(status, 'rec.export.cancelled');
    else if (err instanceof ApiError && err.status === 404) sayKey(status, 'rec.export.nothing', span);
    else if (err instanceof ApiError && err.status === 401) sayKey(status, 'rec.err.unauthorized');
    else if (err instanceof ApiError && err.status === 403) sayKey(status, 'rec.err.forbidden');
    else if (err instanceof NetworkError) sayKey(status, 'rec.export.network');
    else say(status, () => [t('rec.export.failed'), t('common.sentence_sep'), ...readableNodes(err)]);
  } finally {
    rec.exporting = null;
    renderRecExport();
  }
}
$('#rec-export').addEventListener('click', exportRange);

$('#rec-pick').addEventListener('submit', (e) => {
  e.preventDefault();
  loadRecSources().then(() => { fillRecSources(); loadRecordings(); });
});
$('#rec-source').addEventListener('change', () => {
  rec.sourceChosen = true;
  loadRecordings();
});
$('#rec-date').addEventListener('change', () => loadRecSources().then(() => { fillRecSources(); loadRecordings(); }));
for (const id of ['#rec-from', '#rec-to']) $(id).addEventListener('change', () => loadRecordings());
$('#rec-today').addEventListener('click', () => {
  $('#rec-date').value = dayValue(Date.now());
  $('#rec-from').value = '00:00';
  $('#rec-to').value = '23:59';
  loadRecSources().then(() => { fillRecSources(); loadRecordings(); });
});
let recResizeTimer = null;
window.addEventListener('resize', () => {
  clearTimeout(recResizeTimer);
  recResizeTimer = setTimeout(() => { if (!$('#view-recordings').hidden && rec.tab === 'files') renderRecTimeline(); }, 150);
});
onLanguage(() => {
  fillRecSources();
  if (rec.range) {
    renderRecTimeline();
    renderRecFiles();
  }
  renderPlans();
});

// ---- record plans (录像计划): plans, their channels' states, retention (read only) ----

const PLANS_REFRESH_MS = 2000;
const WEEKDAYS = [1, 2, 3, 4, 5, 6, 7];
const plans = {
  list: null, channels: [], retention: null, error: null, retentionError: null,
  shown: false, timer: null, loading: false, editing: null, armed: null, armTimer: null,
};

function startPlans() {
  plans.shown = true;
  if (!$('#pf-ranges').children.length) planFormReset();
  refreshPlans();
}
function stopPlans() {
  plans.shown = false;
  clearTimeout(plans.timer);
  plans.timer = null;
}
// Read again every few seconds while shown (one request at a time).
async function refreshPlans() {
  clearTimeout(plans.timer);
  if (!plans.shown || plans.loading) return;
  plans.loading = true;
  try {
    await loadPlans();
  } finally {
    plans.loading = false;
    if (plans.shown) plans.timer = setTimeout(refreshPlans, PLANS_REFRESH_MS);
  }
}
async function loadPlans() {
  const [p, r] = await Promise.allSettled([api('GET', '/api/record-plans'), api('GET', '/api/retention')]);
  if (p.status === 'fulfilled') {
    plans.list = p.value.plans || [];
    plans.channels = p.value.channels || [];
    plans.error = null;
  } else plans.error = p.reason;
  if (r.status === 'fulfilled') {
    plans.retention = r.value;
    plans.retentionError = null;
  } else plans.retentionError = r.reason;
  renderPlans();
}

function daysText(days) {
  const d = [...new Set(days)].filter((x) => x >= 1 && x <= 7).sort((a, b) => a - b);
  if (d.length === 7) return t('plan.days.all');
  const runs = [];
  for (const x of d) {
    const last = runs[runs.length - 1];
    if (last && x === last[1] + 1) last[1] = x;
    else runs.push([x, x]);
  }
  const day = (x) => t(`plan.day.${x}`);
  return runs.map(([a, b]) => (a === b ? day(a) : b === a + 1 ? `${day(a)}${t('common.list_sep')}${day(b)}` : t('plan.days.run', { from: day(a), to: day(b) }))).join(t('common.list_sep'));
}
const rangeText = (r) => t('plan.range', { days: daysText(r.days), start: r.start, end: r.end });
const planStateText = (s) => (`plan.state.${s}` in I18N.en ? t(`plan.state.${s}`) : s);

function renderPlans() {
  if (plans.list === null && !plans.error) return;
  const note = $('#plans-note');
  note.hidden = !plans.error;
  note.classList.toggle('error', !!plans.error);
  if (plans.error) {
    const err = plans.error;
    say(note, () => {
      if (err instanceof ApiError && err.code === 'sip_disabled') return sentence('plan.err.sip_disabled', { config: el('code', {}, 'sip.listen') });
      if (err instanceof ApiError && err.status === 401) return t('plan.why.unauthorized');
      if (err instanceof NetworkError) return t('plan.err.unreachable');
      return [t('plan.err.load'), t('common.sentence_sep'), ...readableNodes(err)];
    });
  }
  // Drawn again only when something changed (a button is not replaced under the pointer).
  const sig = JSON.stringify([lang, plans.armed, plans.list, plans.channels, plans.error && readable(plans.error), plans.channels.map((c) => names.get(c.channel_id) || '')]);
  if (sig !== plans.sig) {
    plans.sig = sig;
    renderPlanTables();
  }
  fillAssign();
  renderRetention();
}

function renderPlanTables() {
  const list = plans.list || [];
  $('#plan-rows').replaceChildren(...(list.length ? list.map(planRow)
    : [el('tr', {}, el('td', { colspan: '7', class: 'muted', dataset: { testid: 'plans-none' } }, t(plans.error ? 'plan.unknown' : 'plan.none')))]));
  $('#pc-rows').replaceChildren(...(plans.channels.length ? plans.channels.map(channelPlanRow)
    : [el('tr', {}, el('td', { colspan: '6', class: 'muted' }, t(plans.error ? 'plan.unknown' : 'plan.c.none')))]));
}

function planRow(p) {
  const armed = plans.armed === p.name;
  const channelNames = p.channels.map((k) => k.split('/')[1]).map((c) => (names.get(c) ? `${names.get(c)} (${c})` : c));
  return el('tr', { dataset: { testid: `plan-row-${p.name}` } },
    el('td', {}, el('strong', { class: 'data' }, p.name)),
    el('td', { class: 'when' }, ...p.ranges.map((r) => el('div', {}, rangeText(r)))),
    el('td', {}, el('code', {}, p.time_zone)),
    el('td', {}, p.max_age_days ? t('plan.keep_days', { n: p.max_age_days }) : t('plan.keep_default')),
    el('td', {}, el('span', { class: `badge ${p.active ? 'on' : 'off'}`, dataset: { testid: `plan-active-${p.name}` } }, t(p.active ? 'plan.active' : 'plan.inactive'))),
    el('td', { title: channelNames.join('\n'), 'data-raw': '' }, String(p.channels.length)),
    el('td', { class: 'actions' },
      el('button', { type: 'button', dataset: { testid: `plan-edit-${p.name}` }, onclick: () => editPlan(p) }, t('plan.edit')), ' ',
      el('button', { type: 'button', class: armed ? 'danger' : '', dataset: { testid: `plan-del-${p.name}` }, onclick: () => deletePlan(p.name) }, t(armed ? 'plan.delete_confirm' : 'plan.delete'))));
}

function channelPlanRow(c) {
  const name = names.get(c.channel_id);
  return el('tr', { dataset: { testid: `pc-${c.channel_id}` } },
    el('td', {}, ...(name ? [dataSpan(name), ' '] : []), el('code', {}, c.channel_id)),
    el('td', {}, el('span', { class: 'data' }, c.plan), ' ', el('span', { class: `badge ${c.active ? 'on' : 'off'}` }, t(c.active ? 'plan.active' : 'plan.inactive'))),
    el('td', {}, el('span', { class: `badge ${c.state}`, dataset: { testid: `pc-state-${c.channel_id}` } }, planStateText(c.state)),
      ...(c.stream_id ? [' ', el('code', { title: t('plan.c.stream') }, c.stream_id)] : [])),
    el('td', {}, c.since_ms ? dateText(c.since_ms) : '—'),
    el('td', { class: 'plan-error', dataset: { testid: `pc-error-${c.channel_id}` } }, c.last_error ? dataSpan(c.last_error) : '—'),
    el('td', { class: 'actions' }, el('button', { type: 'button', title: t('plan.c.remove_title'), dataset: { testid: `pc-remove-${c.channel_id}` }, onclick: () => assignPlan(c.device_id, c.channel_id, null) }, t('plan.c.remove'))));
}

// The channel and plan selects of the assignment: every channel of the tree (and any with a plan).
function fillAssign() {
  const ch = $('#pa-channel');
  const keep = ch.value;
  const options = [];
  const seen = new Set();
  for (const d of devices) {
    for (const c of channelsOf.get(d.device_id) || []) {
      const v = `${d.device_id}/${c.device_id}`;
      if (seen.has(v)) continue;
      seen.add(v);
      options.push(el('option', { value: v }, c.name && c.name !== c.device_id ? `${c.name} (${c.device_id})` : c.device_id));
    }
  }
  for (const c of plans.channels) {
    const v = `${c.device_id}/${c.channel_id}`;
    if (!seen.has(v)) { seen.add(v); options.push(el('option', { value: v }, c.channel_id)); }
  }
  if (!options.length) options.push(el('option', { value: '' }, t('plan.a.no_channels')));
  // Replaced only when they changed (an open select stays open).
  const sig = (os) => JSON.stringify(os.map((o) => [o.value, o.textContent]));
  if (sig(options) !== sig([...ch.options])) {
    ch.replaceChildren(...options);
    if (keep && seen.has(keep)) ch.value = keep;
  }
  const pl = $('#pa-plan');
  const keepPlan = pl.dataset.chosen ?? pl.value;
  const planOptions = [el('option', { value: '' }, t('plan.a.none')), ...(plans.list || []).map((p) => el('option', { value: p.name }, p.name))];
  if (sig(planOptions) !== sig([...pl.options])) {
    pl.replaceChildren(...planOptions);
    if ([...pl.options].some((o) => o.value === keepPlan)) pl.value = keepPlan;
  }
  if (!('chosen' in pl.dataset)) pl.value = currentPlanOf(ch.value);
}
const currentPlanOf = (v) => {
  const c = plans.channels.find((x) => `${x.device_id}/${x.channel_id}` === v);
  return c ? c.plan : '';
};
$('#pa-channel').addEventListener('change', () => {
  delete $('#pa-plan').dataset.chosen;
  $('#pa-plan').value = currentPlanOf($('#pa-channel').value);
});
$('#pa-plan').addEventListener('change', () => { $('#pa-plan').dataset.chosen = $('#pa-plan').value; });
$('#pa-set').addEventListener('click', () => {
  const v = $('#pa-channel').value;
  if (!v) { sayKey($('#pa-status'), 'plan.a.need_channel'); $('#pa-status').className = 'status error'; return; }
  const at = v.indexOf('/');
  assignPlan(v.slice(0, at), v.slice(at + 1), $('#pa-plan').value || null);
});

async function assignPlan(deviceId, channelId, plan) {
  const status = $('#pa-status');
  status.className = 'status';
  sayKey(status, 'plan.a.saving');
  try {
    await api('PUT', `/api/devices/${encodeURIComponent(deviceId)}/channels/${encodeURIComponent(channelId)}/record-plan`, { plan });
    delete $('#pa-plan').dataset.chosen;
    status.className = 'status ok';
    const channel = () => sourceNode({ kind: 'channel', id: channelId });
    say(status, () => (plan ? sentence('plan.a.done', { channel: channel(), plan: dataSpan(plan) }) : sentence('plan.a.removed', { channel: channel() })));
    await loadPlans();
  } catch (err) {
    status.className = 'status error';
    say(status, () => planProblem(err, 'assign'));
  }
}

// Why a change was not made: `what` says which (save, assign, delete).
function planProblem(err, what) {
  let reason;
  if (err instanceof ApiError && err.status === 403) reason = [t('plan.why.forbidden')];
  else if (err instanceof ApiError && err.status === 401) reason = [t('plan.why.unauthorized')];
  else if (err instanceof ApiError && err.code === 'exists') reason = [t('plan.why.exists')];
  else if (err instanceof NetworkError) reason = [t('plan.why.network')];
  else reason = readableNodes(err);
  return [t(`plan.err.${what}`), t('common.sentence_sep'), ...reason];
}

// ---- the plan form ----

function rangeRow(r, i) {
  const day = (d) => el('label', { class: 'day' },
    el('input', { type: 'checkbox', value: String(d), dataset: { testid: `pf-day-${i}-${d}` }, ...(r.days.includes(d) ? { checked: '' } : {}) }),
    sayKey(el('span'), `plan.day.${d}`));
  const time = (value, which) => el('input', {
    class: 'time', value, maxlength: '8', inputmode: 'numeric', autocomplete: 'off', spellcheck: 'false',
    'data-i18n-placeholder': 'plan.f.time_ph', placeholder: t('plan.f.time_ph'), 'data-i18n-title': `plan.f.${which}`, title: t(`plan.f.${which}`),
    dataset: { testid: `pf-${which}-${i}`, part: which },
  });
  return el('div', { class: 'pf-range', dataset: { testid: `pf-range-${i}` } },
    el('span', { class: 'pf-days', role: 'group' }, ...WEEKDAYS.map(day)),
    el('span', { class: 'pf-times' }, time(r.start, 'start'), el('span', { class: 'muted' }, '–'), time(r.end, 'end'),
      el('button', { type: 'button', 'data-i18n-title': 'plan.f.remove_range', title: t('plan.f.remove_range'), dataset: { testid: `pf-remove-${i}` }, onclick: () => {
        const ranges = readRanges();
        ranges.splice(i, 1);
        renderRanges(ranges);
      } }, '×')));
}
function renderRanges(ranges) {
  $('#pf-ranges').replaceChildren(...ranges.map(rangeRow));
}
function readRanges() {
  return [...$('#pf-ranges').querySelectorAll('.pf-range')].map((row) => ({
    days: [...row.querySelectorAll('input[type=checkbox]:checked')].map((c) => Number(c.value)),
    start: row.querySelector('[data-part=start]').value.trim(),
    end: row.querySelector('[data-part=end]').value.trim(),
  }));
}
$('#pf-add-range').addEventListener('click', () => renderRanges([...readRanges(), { days: [1, 2, 3, 4, 5], start: '08:00', end: '18:00' }]));

function renderPlanFormTitle() {
  const name = plans.editing;
  say($('#pf-title'), () => (name === null ? t('plan.f.add_title') : sentence('plan.f.edit_title', { name: dataSpan(name) })));
  sayKey($('#pf-submit'), name === null ? 'plan.f.add' : 'plan.f.save');
  $('#pf-cancel').hidden = name === null;
  $('#pf-name').readOnly = name !== null;
}
function planFormReset() {
  plans.editing = null;
  $('#pf-name').value = '';
  $('#pf-zone').value = '+08:00';
  $('#pf-keep').value = '';
  renderRanges([{ days: [...WEEKDAYS], start: '00:00', end: '24:00' }]);
  renderPlanFormTitle();
}
function editPlan(p) {
  plans.editing = p.name;
  $('#pf-name').value = p.name;
  $('#pf-zone').value = p.time_zone;
  $('#pf-keep').value = p.max_age_days || '';
  renderRanges(p.ranges.map((r) => ({ ...r, days: [...r.days] })));
  renderPlanFormTitle();
  sayKey($('#pf-status'), '');
  $('#plan-form').scrollIntoView({ block: 'nearest' });
}
$('#pf-cancel').addEventListener('click', () => { planFormReset(); sayKey($('#pf-status'), ''); });

$('#plan-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const status = $('#pf-status');
  const editing = plans.editing;
  const name = editing ?? $('#pf-name').value.trim();
  status.className = 'status error';
  if (!name) { sayKey(status, 'plan.f.need_name'); return; }
  const body = { name, time_zone: $('#pf-zone').value.trim() || '+08:00', ranges: readRanges() };
  const keep = $('#pf-keep').value.trim();
  if (keep) body.max_age_days = Number(keep);
  status.className = 'status';
  sayKey(status, 'plan.f.saving');
  try {
    if (editing !== null) await api('PUT', `/api/record-plans/${encodeURIComponent(name)}`, body);
    else await api('POST', '/api/record-plans', body);
    planFormReset();
    status.className = 'status ok';
    say(status, () => sentence(editing !== null ? 'plan.f.saved' : 'plan.f.added', { name: dataSpan(name) }));
    await loadPlans();
  } catch (err) {
    status.className = 'status error';
    say(status, () => planProblem(err, 'save'));
  }
});

// Deleted on the second click within a few seconds (the first asks).
async function deletePlan(name) {
  const status = $('#plans-status');
  clearTimeout(plans.armTimer);
  if (plans.armed !== name) {
    plans.armed = name;
    plans.armTimer = setTimeout(() => { plans.armed = null; renderPlans(); }, REMOVE_ARMED_MS);
    renderPlans();
    return;
  }
  plans.armed = null;
  try {
    await api('DELETE', `/api/record-plans/${encodeURIComponent(name)}`);
    if (plans.editing === name) planFormReset();
    status.className = 'status ok';
    say(status, () => sentence('plan.deleted', { name: dataSpan(name) }));
    await loadPlans();
  } catch (err) {
    status.className = 'status error';
    say(status, () => planProblem(err, 'delete'));
    renderPlans();
  }
}

// ---- retention (read only) ----

function renderRetention() {
  const dl = $('#retention');
  const v = plans.retention;
  const sig = JSON.stringify([lang, v, plans.retentionError && readable(plans.retentionError), (plans.list || []).map((p) => [p.name, p.max_age_days])]);
  if (sig === plans.retentionSig) return;
  plans.retentionSig = sig;
  if (!v) {
    dl.replaceChildren(...(plans.retentionError ? [el('dd', { class: 'error' }, ...readableNodes(plans.retentionError))] : []));
    return;
  }
  const items = [];
  const item = (key, testid, ...value) => items.push(el('dt', {}, t(key)), el('dd', { dataset: { testid: `ret-${testid}` } }, ...value));
  const limit = (n, text) => (n ? text : t('ret.no_limit'));
  const rules = v.rules;
  if (!rules) item('ret.rules', 'rules', t('ret.not_running'));
  else {
    item('ret.max_age', 'max-age', limit(rules.max_age_days, t('ret.days', { n: rules.max_age_days })));
    item('ret.max_used', 'max-used', limit(rules.max_used_bytes, sizeText(rules.max_used_bytes)));
    item('ret.min_free', 'min-free', limit(rules.min_free_bytes, sizeText(rules.min_free_bytes)));
    item('ret.interval', 'interval', t('ret.every', { n: rules.interval_s }));
  }
  const own = (plans.list || []).filter((p) => p.max_age_days);
  if (own.length) {
    item('ret.plans', 'plans', ...own.flatMap((p, i) => [...(i ? [t('common.list_sep')] : []), ...sentence('ret.plan_days', { name: dataSpan(p.name), n: p.max_age_days })]));
  }
  if (!v.last_pass_unix_ms) item('ret.last', 'last', t(rules ? 'ret.never' : 'ret.not_running'));
  else {
    const l = v.last || {};
    item('ret.last', 'last', dateText(v.last_pass_unix_ms));
    const why = l.why && `ret.why.${l.why}` in I18N.en ? t(`ret.why.${l.why}`) : (l.why || '');
    item('ret.deleted', 'deleted', l.deleted_files ? t('ret.deleted_n', { files: l.deleted_files, size: sizeText(l.deleted_bytes), why }) : t('ret.deleted_none'));
    item('ret.used', 'used', sizeText(l.used_bytes));
    if (l.free_bytes !== null && l.free_bytes !== undefined) item('ret.free', 'free', l.total_bytes ? t('ret.free_of', { free: sizeText(l.free_bytes), total: sizeText(l.total_bytes) }) : sizeText(l.free_bytes));
    if (l.error) item('ret.error', 'error', dataSpan(l.error));
  }
  item('ret.totals', 'totals', t('ret.totals_text', { passes: v.passes, files: v.deleted_files_total, size: sizeText(v.deleted_bytes_total) }));
  dl.replaceChildren(...items);
}

// ---- sources (视频源): RTSP pull proxies and RTMP pushes ----
// The pull proxies (GET /api/proxies) with their state explained (a badge, the last error in
// words and when gmv dials again), a form to add and change them; the RTMP publishers (streams
// named `{app}/{stream}` in /api/streams, not `proxy/...`) and the RTMP counters (/api/rtmp);
// push addresses (publish tokens) for encoders, with copy buttons. Every source plays in the
// wall. Refreshed every 2 s while shown, one request at a time; rows stay (a button is never
// replaced under the pointer). Changing takes an operator key: a viewer's key sees and plays,
// and is told why there is no form. The API names no role, so it is learnt from GET
// /api/upstreams (an operator's call: 403 for a viewer) and from any 403 to a change.

const SOURCES_REFRESH_MS = 2000;
const PROXY_STATUSES = ['starting', 'idle', 'connecting', 'playing', 'retrying', 'unauthorized', 'stopped'];
const PROXY_IDLE_S_DEFAULT = 30;
const PUBLISH_DAYS_DEFAULT = 30;
const PUBLISH_DAYS_MAX = 3650;
/// Pages of /api/streams read for the RTMP publishers (named streams come last in its order).
const STREAM_PAGES_MAX = 5;
const srcs = {
  shown: false, timer: null, loading: false, loads: 0, ignoreBefore: 0,
  proxies: null, max: null, proxiesError: null, streams: null, streamsError: null, rtmp: null, rtmpError: null,
  updatedAt: 0, canWrite: null, probing: null, again: false,
  rows: new Map(), // proxy name -> {p, node, cells, play, edit, del}
  pushRows: new Map(), // stream id -> {s, node, cells, play}
  editing: null, // the proxy the form changes ({name, url, transport, mode, idle_s}), or null: it adds one
  armed: null, armTimer: null,
  failSeen: new Map(), // proxy name -> {failures, at}: when this page first saw its latest failure
  issued: null, // the last push address issued here
};

function startSources() {
  if (srcs.shown) return;
  srcs.shown = true;
  if (srcs.canWrite === null) probeSourcesRole();
  renderSourcesAccess();
  refreshSources();
}
function stopSources() {
  if (srcs.shown) releasePtz();
  srcs.shown = false;
  clearTimeout(srcs.timer);
  srcs.timer = null;
}
async function refreshSources() {
  clearTimeout(srcs.timer);
  srcs.timer = null;
  if (!srcs.shown || srcs.loading) return;
  srcs.loading = true;
  try {
    await loadSources();
  } finally {
    srcs.loading = false;
    if (srcs.shown && !srcs.timer) srcs.timer = setTimeout(refreshSources, srcs.again ? 0 : SOURCES_REFRESH_MS);
    srcs.again = false;
  }
}
// The lists read again at once after a change, still one request at a time: a load under way
// (its answer may predate the change, and is dropped) is followed by another straight away.
function reloadSources() {
  srcs.ignoreBefore = srcs.loads + 1;
  if (srcs.loading) { srcs.again = true; return; }
  refreshSources();
}

// Whether this key may change sources: an admin's may; another's is asked of an operator's
// read (a viewer's gets 403).
async function probeSourcesRole() {
  if (isAdmin === true) { srcs.canWrite = true; return; }
  if (srcs.probing) return;
  srcs.probing = api('GET', '/api/upstreams').then(() => true, (err) => !(err instanceof ApiError && err.status === 403));
  srcs.canWrite = await srcs.probing;
  srcs.probing = null;
  renderSourcesAccess();
  if (srcs.proxies) renderSources();
}
function learnViewer(err) {
  if (err instanceof ApiError && err.status === 403 && srcs.canWrite !== false) {
    srcs.canWrite = false;
    renderSourcesAccess();
    renderSources();
  }
}

// The streams, in pages (the RTMP publishers' named streams sort last).
async function allStreams() {
  const first = await api('GET', '/api/streams?limit=1000');
  const list = [...(first.streams || [])];
  for (let page = 1; page < STREAM_PAGES_MAX && list.length < (first.total || 0); page++) {
    const next = await api('GET', `/api/streams?limit=1000&offset=${list.length}`);
    if (!next.streams || !next.streams.length) break;
    list.push(...next.streams);
  }
  return list;
}

async function loadSources() {
  const n = ++srcs.loads;
  const [p, s, r] = await Promise.allSettled([api('GET', '/api/proxies'), allStreams(), api('GET', '/api/rtmp')]);
  if (n < srcs.ignoreBefore) return;
  if (p.status === 'fulfilled') {
    srcs.proxies = Array.isArray(p.value && p.value.proxies) ? p.value.proxies : [];
    srcs.max = p.value.max ?? null;
    srcs.proxiesError = null;
  } else {
    srcs.proxiesError = p.reason;
    if (p.reason instanceof ApiError && [401, 403, 503].includes(p.reason.status)) srcs.proxies = null;
  }
  if (s.status === 'fulfilled') { srcs.streams = s.value; srcs.streamsError = null; } else srcs.streamsError = s.reason;
  if (r.status === 'fulfilled') { srcs.rtmp = r.value; srcs.rtmpError = null; } else srcs.rtmpError = r.reason;
  if (p.status === 'fulfilled' || s.status === 'fulfilled') srcs.updatedAt = Date.now();
  renderSources();
}

const proxyStatusText = (s) => (PROXY_STATUSES.includes(s) ? t(`src.status.${s}`) : s);
const firstLine = (text) => String(text).split('\n')[0].trim();

// What a proxy's `last_error` (retina's or gmv's words) means, and what to check:
// {title, hint, raw} (raw: shown too when the words are not recognised).
function explainPullError(error) {
  const text = String(error);
  let m;
  if ((m = /^(\d{3})\b[^\n]*? response to (\w+)/.exec(text))) {
    const code = Number(m[1]);
    const params = { code, method: codeEl(m[2]) };
    if (code === 401 || code === 403) return { title: sentence('src.perr.credentials', params), hint: t('src.phint.credentials') };
    if (code === 404) return { title: sentence('src.perr.path', params), hint: sentence('src.phint.path', { example: codeEl('/Streaming/Channels/101') }) };
    if (code === 461) return { title: sentence('src.perr.transport', params), hint: t('src.phint.transport') };
    if (code >= 500) return { title: sentence('src.perr.camera_failing', params), hint: t('src.phint.camera_failing') };
    return { title: sentence('src.perr.answered', params), hint: '', raw: firstLine(text) };
  }
  // gmv's HTTP-FLV/HLS client: "HTTP 404 Not Found" (a segment's: "segment 12: HTTP 404 ...").
  if ((m = /^(?:segment \S+ )?HTTP (\d{3})/.exec(text))) {
    const code = Number(m[1]);
    const params = { code, method: codeEl('GET') };
    if (code === 401 || code === 403) return { title: sentence('src.perr.credentials', params), hint: t('src.phint.credentials') };
    if (code === 404) return { title: sentence('src.perr.path', params), hint: sentence('src.phint.http_path', { example: codeEl('/live/stream.flv') }) };
    if (code >= 500) return { title: sentence('src.perr.camera_failing', params), hint: t('src.phint.camera_failing') };
    return { title: sentence('src.perr.answered', params), hint: '', raw: firstLine(text) };
  }
  if ((m = /^(?:Unable to connect to RTSP server|connect \S+): (.*)/.exec(text))) {
    const why = m[1];
    if (/refused/i.test(why)) return { title: t('src.perr.refused'), hint: t('src.phint.refused'), raw: firstLine(why) };
    if (/timed? ?out/i.test(why)) return { title: t('src.perr.no_answer'), hint: t('src.phint.no_answer'), raw: firstLine(why) };
    if (/unreachable|no route/i.test(why)) return { title: t('src.perr.unreachable'), hint: t('src.phint.unreachable'), raw: firstLine(why) };
    if (/lookup|resolve|name or service|nodename|dns/i.test(why)) return { title: t('src.perr.dns'), hint: t('src.phint.dns'), raw: firstLine(why) };
    return { title: t('src.perr.connect'), hint: t('src.phint.refused'), raw: firstLine(why) };
  }
  if ((m = /^no PLAY within (\d+) s/.exec(text)) || /^Timeout/.test(text)) return { title: t('src.perr.slow', { s: m ? m[1] : 10 }), hint: t('src.phint.no_answer') };
  if ((m = /^no H\.264 or H\.265 video track \(the source offers (.*)\)/.exec(text))) return { title: t('src.perr.codec'), hint: t('src.phint.codec'), raw: m[1] };
  if ((m = /^silent for (\d+) s/.exec(text))) return { title: t('src.perr.silent', { s: m[1] }), hint: t('src.phint.silent') };
  if (/^the source ended the session/.test(text)) return { title: t('src.perr.ended'), hint: t('src.phint.silent') };
  if (/^video parameters:/.test(text)) return { title: t('src.perr.parameters'), hint: t('src.phint.codec'), raw: firstLine(text) };
  if ((m = /^stream not opened: (.*)/.exec(text))) return { title: t('src.perr.stream'), hint: t('src.phint.stream'), raw: firstLine(m[1]) };
  return { title: t('src.perr.other'), hint: '', raw: firstLine(text) };
}

// Why the engine refused a proxy (its 400's words), in the operator's words (nodes), or null.
function proxyRefusal(message) {
  const text = String(message || '');
  let m;
  if (/^name is /.test(text)) return sentence('src.why.name');
  if ((m = /^url is longer than (\d+)/.exec(text))) return sentence('src.why.url_long', { n: m[1] });
  if ((m = /^url scheme (\S+?):\/\/ is not pulled(?: \(([^)]*)\))?/.exec(text))) {
    // What gmv pulls, as its message lists them (rtsp://, and in later versions more).
    const pulled = [...new Set((m[2] || 'rtsp://').match(/\b[a-z]+:\/\/[^\s,;)]*/g) || ['rtsp://'])];
    const list = pulled.flatMap((x, i) => [...(i ? [t('common.list_sep')] : []), codeEl(x)]);
    const parts = sentence('src.why.scheme', { scheme: codeEl(`${m[1]}://`), list: el('span', {}, ...list) });
    if (!pulled.some((x) => x.startsWith('rtmp://'))) parts.push(t('common.sentence_sep'), ...sentence('src.why.scheme_push'));
    return parts;
  }
  if (/^transport udp is for rtsp/.test(text)) return sentence('src.why.udp_rtsp_only', { rtsp: codeEl('rtsp://') });
  if (/^an rtmp:\/\/ url is/.test(text)) return sentence('src.why.rtmp_url', { example: codeEl('rtmp://host:1935/app/stream') });
  if (/^url has no host/.test(text)) return sentence('src.why.no_host', { rtsp: codeEl('rtsp://') });
  if (/^url: /.test(text)) return sentence('src.why.url_invalid', { example: codeEl('rtsp://192.168.1.64:554/...') });
  if (/^idle_s /.test(text)) return sentence('src.why.idle');
  if (/^mode /.test(text) || /unknown variant[^\n]*always/.test(text)) return sentence('src.why.mode');
  if (/^transport /.test(text) || /unknown variant[^\n]*tcp/.test(text)) return sentence('src.why.transport');
  return null;
}

// Why a change was not made, in the operator's words: `what` is add, save or delete.
function proxyProblem(err, what, name) {
  return [t(`src.err.${what}`), t('common.sentence_sep'), ...proxyReason(err, name)];
}
// Why the engine refused a change of proxy `name`, in the operator's words (nodes).
function proxyReason(err, name) {
  let reason;
  let x;
  if (err instanceof ApiError && err.status === 403) reason = [t('src.why.forbidden')];
  else if (err instanceof ApiError && err.status === 401) reason = [t('src.why.unauthorized')];
  else if (err instanceof ApiError && err.code === 'exists') reason = sentence('src.why.exists', { name: dataSpan(name) });
  else if (err instanceof ApiError && err.code === 'too_many') reason = [t('src.why.too_many', { max: srcs.max ?? 1000 })];
  else if (err instanceof ApiError && err.status === 404) reason = sentence('src.why.gone', { name: dataSpan(name) });
  else if (err instanceof ApiError && err.code === 'pull_unavailable') reason = [t('src.why.pull_unavailable')];
  else if (err instanceof ApiError && err.status === 400 && (x = proxyRefusal(err.message))) reason = x;
  else if (err instanceof NetworkError) reason = [t('src.why.network')];
  else reason = readableNodes(err);
  return reason;
}

// Why no push address was issued.
function publishProblem(err) {
  const text = err instanceof ApiError ? String(err.message || '') : '';
  let reason;
  if (err instanceof ApiError && err.status === 403) reason = [t('src.why.forbidden')];
  else if (err instanceof ApiError && err.status === 401) reason = [t('src.why.unauthorized')];
  else if (err instanceof ApiError && err.code === 'rtmp_disabled') reason = sentence('src.pub.why.rtmp_off', { config: codeEl('rtmp.enabled') });
  else if (err instanceof ApiError && err.status === 400 && /^stream is /.test(text)) reason = sentence('src.pub.why.format', { example: codeEl('live/cam1') });
  else if (err instanceof ApiError && err.status === 400 && /^app and stream names/.test(text)) reason = [t('src.pub.why.names')];
  else if (err instanceof ApiError && err.status === 400 && /^ttl_s/.test(text)) reason = [t('src.pub.why.days', { max: PUBLISH_DAYS_MAX })];
  else if (err instanceof NetworkError) reason = [t('src.why.network')];
  else reason = readableNodes(err);
  return [t('src.pub.failed'), t('common.sentence_sep'), ...reason];
}

// The form and the change buttons for an operator; for a viewer, why there are none.
function renderSourcesAccess() {
  const viewer = srcs.canWrite === false;
  $('#sources-role').hidden = !viewer;
  // Shown once the key is known to be allowed (no form flashes before a viewer).
  $('#proxy-form').hidden = srcs.canWrite !== true;
  $('#push-form').hidden = srcs.canWrite !== true;
  // ONVIF: every call finds, reads, adds or moves a camera (an operator's).
  $('#onvif-section').hidden = srcs.canWrite !== true;
  if (viewer) ovs.open.clear();
  if (viewer && srcs.editing) proxyFormReset();
}

// Why a list is not shown (or may be stale): nodes, or null when all is well.
function sourcesListProblem(err, what) {
  if (!err) return null;
  if (err instanceof ApiError && err.status === 401) return [t('src.why.unauthorized')];
  if (err instanceof ApiError && err.code === 'pull_unavailable') return [t('src.why.pull_unavailable')];
  if (err instanceof NetworkError) return [t('src.list.unreachable')];
  return [t(`src.list.${what}`), t('common.sentence_sep'), ...readableNodes(err)];
}

function renderSources() {
  if (!srcs.shown && !srcs.proxies) return;
  say($('#sources-updated'), () => (srcs.updatedAt ? t('src.updated', { time: timeText(srcs.updatedAt) }) : ''));
  // Pull proxies.
  const pnote = $('#proxies-note');
  const pproblem = sourcesListProblem(srcs.proxiesError, 'proxies');
  pnote.hidden = !pproblem;
  pnote.className = 'notice error';
  if (pproblem) say(pnote, () => sourcesListProblem(srcs.proxiesError, 'proxies'));
  const list = srcs.proxies || [];
  const seen = new Set(list.map((p) => p.name));
  for (const name of [...srcs.rows.keys()]) if (!seen.has(name)) srcs.rows.delete(name);
  for (const name of [...srcs.failSeen.keys()]) if (!seen.has(name)) srcs.failSeen.delete(name);
  // A proxy made from a camera with PTZ has its PTZ panel open under its row, when asked.
  for (const name of [...ovs.panels.keys()]) if (!seen.has(name)) ovs.panels.delete(name);
  if (srcs.proxies) for (const name of [...ovs.open]) if (!seen.has(name)) ovs.open.delete(name);
  const rows = list.flatMap((p) => {
    const row = proxyRow(p);
    if (!ovs.open.has(p.name)) return [row];
    if (!canMove(p)) { ovs.open.delete(p.name); return [row]; }
    return [row, ptzPanel(p.name).node];
  });
  if (!rows.length) {
    const none = el('td', { colspan: '8', class: 'muted empty', dataset: { testid: 'proxies-none' } });
    say(none, () => (srcs.proxies ? t(srcs.canWrite === false ? 'src.none_viewer' : 'src.none') : srcs.proxiesError ? '' : t('src.loading')));
    rows.push(el('tr', { class: 'empty' }, none));
  }
  keepRows($('#proxy-rows'), rows);
  if (ovs.cameras && ovs.cameras.length) renderOvAdded();
  say($('#proxies-count'), () => (srcs.proxies && srcs.proxies.length ? t('src.count', { n: srcs.proxies.length, max: srcs.max ?? '—' }) : ''));
  renderPushes();
}

// Puts `rows` in `body`, moving only what changed (rows kept are not replaced).
function keepRows(body, rows) {
  if (rows.length !== body.children.length || rows.some((r, i) => body.children[i] !== r)) body.replaceChildren(...rows);
}

// A cell: its column's name (shown beside it when the table is cards, on a phone) and its value.
function cell(r, key, head) {
  const value = el('div', { class: 'v' });
  r.cells[key] = value;
  r.heads.push([head, null]);
  const td = el('td', { class: key }, value);
  r.heads[r.heads.length - 1][1] = td;
  return td;
}
function labelCells(r) {
  for (const [head, td] of r.heads) td.dataset.label = t(head);
}

function proxyRow(p) {
  let r = srcs.rows.get(p.name);
  if (!r) {
    r = { cells: {}, heads: [] };
    r.play = el('button', { type: 'button', class: 'play', dataset: { testid: `src-play-${p.name}` }, onclick: () => playSource(r.p.stream_id, `proxy/${r.p.name}`) });
    r.edit = el('button', { type: 'button', dataset: { testid: `src-edit-${p.name}` }, onclick: () => editProxy(r.p) });
    r.del = el('button', { type: 'button', dataset: { testid: `src-del-${p.name}` }, onclick: () => deleteProxy(r.p.name) });
    r.ptz = el('button', { type: 'button', class: 'ptz-toggle', 'aria-expanded': 'false', dataset: { testid: `src-ptz-${p.name}` }, onclick: () => togglePtz(r.p.name) });
    const actions = el('td', { class: 'actions' }, el('div', { class: 'v' }, r.play, r.ptz, r.edit, r.del));
    r.node = el('tr', { dataset: { testid: `proxy-${p.name}` } },
      cell(r, 'name', 'src.h.name'), cell(r, 'url', 'src.h.url'), cell(r, 'transport', 'src.h.transport'), cell(r, 'mode', 'src.h.mode'),
      cell(r, 'status', 'src.h.status'), cell(r, 'frames', 'src.h.frames'), cell(r, 'codecs', 'src.h.codecs'), actions);
    srcs.rows.set(p.name, r);
  }
  r.p = p;
  fillProxyRow(r);
  return r.node;
}

function fillProxyRow(r) {
  const p = r.p;
  const s = p.state || {};
  const status = PROXY_STATUSES.includes(s.status) ? s.status : 'unknown';
  labelCells(r);
  r.cells.name.replaceChildren(el('strong', { class: 'data' }, p.name), el('br'), el('code', { class: 'muted', title: t('src.stream_id') }, p.stream_id));
  r.cells.url.replaceChildren(el('code', { dataset: { testid: `proxy-url-${p.name}` } }, p.url), ...onvifLine(p));
  r.cells.transport.replaceChildren(String(p.transport || '').toUpperCase() || '—');
  r.cells.mode.replaceChildren(el('span', { dataset: { testid: `proxy-mode-${p.name}` } },
    p.mode === 'on_demand' ? t('src.mode.on_demand_n', { s: p.idle_s ?? PROXY_IDLE_S_DEFAULT }) : p.mode === 'always' ? t('src.mode.always') : p.mode));
  // The status: a badge, what it means, the last error in words, when gmv dials again.
  const parts = [el('span', { class: `badge px-${status}`, dataset: { testid: `proxy-status-${p.name}` } }, proxyStatusText(s.status))];
  if (status === 'idle') parts.push(el('div', { class: 'muted' }, t('src.idle_note')));
  if (status === 'starting' || status === 'connecting') parts.push(el('div', { class: 'muted' }, t(s.failures ? 'src.retry_now' : 'src.connecting_note')));
  if (s.last_error && status !== 'playing' && status !== 'idle') {
    const x = explainPullError(s.last_error);
    parts.push(el('div', { class: 'problem', dataset: { testid: `proxy-error-${p.name}` }, title: t('src.perr.raw', { raw: s.last_error }), 'data-raw': '' },
      el('div', {}, el('strong', {}, ...[].concat(x.title)), ...(x.raw ? [' ', el('code', {}, x.raw)] : [])),
      ...(x.hint && x.hint.length ? [el('div', { class: 'problem-hint' }, ...[].concat(x.hint))] : [])));
  }
  if ((status === 'retrying' || status === 'unauthorized') && s.retry_in_ms) {
    let seen = srcs.failSeen.get(p.name);
    if (!seen || seen.failures !== s.failures) {
      seen = { failures: s.failures, at: Date.now() };
      srcs.failSeen.set(p.name, seen);
    }
    const left = Math.ceil((s.retry_in_ms - (Date.now() - seen.at)) / 1000);
    parts.push(el('div', { class: 'muted retry', dataset: { testid: `proxy-retry-${p.name}` } },
      left > 0 ? t('src.retry_in', { s: left }) : t('src.retry_now'), t('common.sentence_sep'),
      t('src.retry_rule', { wait: Math.round(s.retry_in_ms / 1000), n: s.failures || 0 })));
  }
  r.cells.status.replaceChildren(...parts);
  r.cells.frames.replaceChildren(el('span', { dataset: { testid: `proxy-frames-${p.name}` } }, String(s.frames ?? 0)),
    ...(s.dropped_frames ? [el('div', { class: 'muted' }, t('src.dropped', { n: s.dropped_frames }))] : []),
    ...(s.connects ? [el('div', { class: 'muted' }, t('src.connects', { n: s.connects }))] : []));
  r.cells.codecs.replaceChildren(el('span', { dataset: { testid: `proxy-codecs-${p.name}` } },
    ...(s.video || s.audio ? [codeEl(s.video || '—'), ' / ', codeEl(s.audio || t('src.no_audio'))] : ['—'])));
  say(r.play, () => t('src.play'));
  r.play.title = t('common.play_in_wall');
  say(r.edit, () => t('src.edit'));
  const armed = srcs.armed === p.name;
  say(r.del, () => t(armed ? 'src.delete_confirm' : 'src.delete'));
  r.del.className = armed ? 'danger' : '';
  r.edit.hidden = srcs.canWrite === false;
  r.del.hidden = srcs.canWrite === false;
  // PTZ: a proxy made from a camera whose stream has it, for an operator.
  const open = ovs.open.has(p.name);
  say(r.ptz, () => t('ptz.title'));
  r.ptz.title = t('src.ov.ptz_button_title');
  r.ptz.hidden = !canMove(p);
  r.ptz.classList.toggle('active', open);
  r.ptz.setAttribute('aria-expanded', String(open));
  r.node.classList.toggle('editing', !!srcs.editing && srcs.editing.name === p.name);
}

// ---- RTMP pushes ----

const isRtmpPush = (s) => typeof s.name === 'string' && s.name.includes('/') && !s.name.startsWith('proxy/');

function durationText(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return t('src.for_s', { s });
  if (s < 3600) return t('src.for_m', { m: Math.floor(s / 60), s: s % 60 });
  return t('src.for_h', { h: Math.floor(s / 3600), m: Math.floor((s % 3600) / 60) });
}

function renderPushes() {
  const note = $('#rtmp-note');
  const off = srcs.rtmp && srcs.rtmp.enabled === false;
  const problem = off ? sentence('src.rtmp.off', { config: codeEl('rtmp.enabled') }) : sourcesListProblem(srcs.streamsError || srcs.rtmpError, 'rtmp');
  note.hidden = !problem;
  note.className = off ? 'notice' : 'notice error';
  if (problem) say(note, () => (off ? sentence('src.rtmp.off', { config: codeEl('rtmp.enabled') }) : sourcesListProblem(srcs.streamsError || srcs.rtmpError, 'rtmp')));
  const pushes = (srcs.streams || []).filter(isRtmpPush);
  const seen = new Set(pushes.map((s) => s.stream_id));
  for (const id of [...srcs.pushRows.keys()]) if (!seen.has(id)) srcs.pushRows.delete(id);
  const rows = pushes.map(pushRow);
  if (!rows.length) {
    const none = el('td', { colspan: '7', class: 'muted empty', dataset: { testid: 'pushes-none' } });
    say(none, () => (srcs.streams ? t(srcs.canWrite === false ? 'src.rtmp.none_viewer' : 'src.rtmp.none') : srcs.streamsError ? '' : t('src.loading')));
    rows.push(el('tr', { class: 'empty' }, none));
  }
  keepRows($('#push-rows'), rows);
  renderRtmpCounters();
}

function pushRow(s) {
  let r = srcs.pushRows.get(s.stream_id);
  if (!r) {
    r = { cells: {}, heads: [] };
    r.play = el('button', { type: 'button', class: 'play', dataset: { testid: `play-push-${s.stream_id}` }, onclick: () => playSource(r.s.stream_id, r.s.name) });
    r.node = el('tr', { dataset: { testid: `push-${s.stream_id}`, name: s.name } },
      cell(r, 'name', 'src.h.push_name'), cell(r, 'video', 'src.h.video'), cell(r, 'audio', 'src.h.audio'), cell(r, 'kbps', 'src.h.kbps'),
      cell(r, 'viewers', 'src.h.viewers'), cell(r, 'since', 'src.h.since'), el('td', { class: 'actions' }, el('div', { class: 'v' }, r.play)));
    srcs.pushRows.set(s.stream_id, r);
  }
  r.s = s;
  labelCells(r);
  r.cells.name.replaceChildren(el('strong', { class: 'data' }, s.name), el('br'), el('code', { class: 'muted', title: t('src.stream_id') }, s.stream_id));
  r.cells.video.replaceChildren(...(s.video_codec ? [codeEl(s.video_codec), ...(s.width ? [' ', el('span', { class: 'data' }, `${s.width}×${s.height}`)] : [])] : [t('src.waiting')]));
  r.cells.audio.replaceChildren(s.audio_codec ? codeEl(s.audio_codec) : t('src.no_audio'));
  r.cells.kbps.replaceChildren(String(s.bitrate_kbps ?? 0));
  r.cells.viewers.replaceChildren(String(s.subscribers ?? 0));
  r.cells.since.replaceChildren(s.age_ms != null ? durationText(s.age_ms) : '—');
  say(r.play, () => t('src.play'));
  r.play.title = t('common.play_in_wall');
  return r.node;
}

// The counters, on one line: the control's (connections until a verified publish) and the
// media shards' (publishing) summed.
function renderRtmpCounters() {
  const box = $('#rtmp-counters');
  const v = srcs.rtmp;
  if (!v || v.enabled === false) { box.replaceChildren(); return; }
  const sum = {};
  for (const part of [v.connecting || {}, v.publishing || {}]) {
    for (const [k, n] of Object.entries(part)) if (typeof n === 'number') sum[k] = (sum[k] || 0) + n;
  }
  const num = (k) => el('span', { class: 'num', dataset: { testid: `rtmp-${k}` } }, String(sum[k] || 0));
  say(box, () => sentence('src.rtmp.counters', {
    listen: codeEl(v.listen || '—'), publishing: num('publishing'), published: num('published'), accepted: num('accepted'),
    refused_token: num('refused_token'), refused_busy: num('refused_busy'), refused_protocol: num('refused_protocol'),
    refused_exists: num('refused_exists'), demux_errors: num('demux_errors'),
  }));
}

function playSource(streamId, label) {
  wallPlay(null, streamId, label);
  show('wall');
}

// ---- the proxy form ----

function renderProxyFormTitle() {
  const p = srcs.editing;
  say($('#px-title'), () => (p ? sentence('src.f.edit_title', { name: dataSpan(p.name) }) : t('src.f.add_title')));
  sayKey($('#px-submit'), p ? 'src.f.save' : 'src.f.add');
  $('#px-cancel').hidden = !p;
  $('#px-name').readOnly = !!p;
  $('#px-url-hint').hidden = !p;
  renderIdleField();
}
function renderIdleField() {
  const onDemand = $('#px-mode').value === 'on_demand';
  $('#px-idle').disabled = !onDemand;
  $('#px-idle-row').classList.toggle('off', !onDemand);
}
$('#px-mode').addEventListener('change', renderIdleField);

function proxyFormReset() {
  srcs.editing = null;
  $('#px-name').value = '';
  $('#px-url').value = '';
  $('#px-transport').value = 'tcp';
  $('#px-mode').value = 'always';
  $('#px-idle').value = '';
  renderProxyFormTitle();
  for (const r of srcs.rows.values()) r.node.classList.remove('editing');
}
function editProxy(p) {
  srcs.editing = { ...p };
  $('#px-name').value = p.name;
  $('#px-url').value = p.url;
  $('#px-transport').value = p.transport === 'udp' ? 'udp' : 'tcp';
  $('#px-mode').value = p.mode === 'on_demand' ? 'on_demand' : 'always';
  $('#px-idle').value = p.mode === 'on_demand' && p.idle_s ? String(p.idle_s) : '';
  renderProxyFormTitle();
  pxStatus(null);
  for (const [name, r] of srcs.rows) r.node.classList.toggle('editing', name === p.name);
  $('#proxy-form').scrollIntoView({ block: 'nearest' });
  $('#px-url').focus();
}
$('#px-cancel').addEventListener('click', () => { proxyFormReset(); pxStatus(null); });

// The form's status line: `cls` ok or error, `fn` its nodes (said again at a switch).
function pxStatus(cls, fn, raw) {
  const status = $('#px-status');
  status.className = `status ${cls || ''}`;
  if (raw) { status.title = raw; status.setAttribute('data-raw', ''); } else { status.removeAttribute('title'); status.removeAttribute('data-raw'); }
  say(status, fn || (() => ''));
}

$('#proxy-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const editing = srcs.editing;
  const name = editing ? editing.name : $('#px-name').value.trim();
  const url = $('#px-url').value.trim();
  const mode = $('#px-mode').value;
  const idle = $('#px-idle').value.trim();
  if (!name) return pxStatus('error', () => t('src.f.need_name'));
  if (!url) return pxStatus('error', () => t('src.f.need_url'));
  if (mode === 'on_demand' && idle && !/^\d+$/.test(idle)) return pxStatus('error', () => t('src.why.idle'));
  const body = { transport: $('#px-transport').value, mode };
  if (mode === 'on_demand') body.idle_s = idle ? Number(idle) : null;
  if (!editing) {
    body.name = name;
    body.url = url;
    if (body.idle_s === null) delete body.idle_s;
  } else if (url !== editing.url) {
    // The list shows the password as ***: an address typed anew carries the password again.
    if (/:\*\*\*@/.test(url)) return pxStatus('error', () => t('src.f.retype_password'));
    body.url = url;
  }
  pxStatus('', () => t('src.f.saving'));
  const button = $('#px-submit');
  button.disabled = true;
  try {
    if (editing) await api('PUT', `/api/proxies/${encodeURIComponent(name)}`, body);
    else await api('POST', '/api/proxies', body);
    proxyFormReset();
    pxStatus('ok', () => sentence(editing ? 'src.f.saved' : 'src.f.added', { name: dataSpan(name) }));
    reloadSources();
  } catch (err) {
    learnViewer(err);
    pxStatus('error', () => proxyProblem(err, editing ? 'save' : 'add', name), err instanceof ApiError && err.message ? t('src.perr.raw', { raw: err.message }) : '');
  } finally {
    button.disabled = false;
  }
});

// Deleted on the second click within a few seconds (the first asks).
async function deleteProxy(name) {
  const status = $('#proxies-status');
  clearTimeout(srcs.armTimer);
  if (srcs.armed !== name) {
    srcs.armed = name;
    srcs.armTimer = setTimeout(() => { srcs.armed = null; renderSources(); }, REMOVE_ARMED_MS);
    renderSources();
    return;
  }
  srcs.armed = null;
  try {
    await api('DELETE', `/api/proxies/${encodeURIComponent(name)}`);
    if (srcs.editing && srcs.editing.name === name) proxyFormReset();
    status.className = 'status ok';
    say(status, () => sentence('src.deleted', { name: dataSpan(name) }));
    reloadSources();
  } catch (err) {
    learnViewer(err);
    status.className = 'status error';
    say(status, () => proxyProblem(err, 'delete', name));
    renderSources();
  }
}

// ---- push addresses (publish tokens) ----

function renderIssued() {
  const box = $('#pub-result');
  const v = srcs.issued;
  box.hidden = !v;
  if (!v) { box.replaceChildren(); return; }
  const value = (key, text, testid) => {
    const copy = el('button', { type: 'button', class: 'copy', dataset: { testid: `copy-${testid}` }, onclick: (e) => copyText(text, e.currentTarget) });
    say(copy, () => t('dev.ob.copy'));
    copy.title = t('dev.ob.copy_title', { what: t(key) });
    return [el('dt', {}, t(key)), el('dd', { dataset: { testid } }, codeEl(text), ' ', copy)];
  };
  box.replaceChildren(
    ...value('src.pub.url', v.url, 'pub-url'),
    el('dd', { class: 'muted full' }, t('src.pub.url_hint')),
    ...value('src.pub.server', v.server, 'pub-server'),
    ...value('src.pub.key', v.stream_key, 'pub-key'),
    el('dt', {}, t('src.pub.expires')), el('dd', { dataset: { testid: 'pub-expires' } }, v.expires_at ? dateText(v.expires_at * 1000) : '—'),
    el('dt', {}, t('src.pub.stream_id')), el('dd', { dataset: { testid: 'pub-stream-id' } }, codeEl(v.stream_id), ' ', el('span', { class: 'muted' }, t('src.pub.stream_id_hint'))),
    el('dd', { class: 'muted full' }, t('src.pub.secret')));
}

$('#push-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const status = $('#pub-status');
  const stream = $('#pub-stream').value.trim();
  const daysText = $('#pub-days').value.trim() || String(PUBLISH_DAYS_DEFAULT);
  const days = Number(daysText);
  status.className = 'status error';
  if (!stream) return sayKey(status, 'src.pub.need_stream');
  if (!/^\d+$/.test(daysText) || days < 1 || days > PUBLISH_DAYS_MAX) return sayKey(status, 'src.pub.why.days', { max: PUBLISH_DAYS_MAX });
  status.className = 'status';
  sayKey(status, 'src.pub.issuing');
  try {
    srcs.issued = await api('POST', '/api/publish-tokens', { stream, ttl_s: days * 86400 });
    status.className = 'status ok';
    say(status, () => sentence('src.pub.issued', { stream: dataSpan(stream), days }));
  } catch (err) {
    learnViewer(err);
    srcs.issued = null;
    status.className = 'status error';
    say(status, () => publishProblem(err));
  }
  renderIssued();
});

// ---- ONVIF cameras (ONVIF 摄像机): found, read, added as pull proxies; PTZ of those ----
// Discover (POST /api/onvif/discover: the local network's multicast group, or one address,
// as cameras on another subnet do not hear multicast) lists the cameras that answer; one
// picked (or a device address typed) is read with its user and password (POST
// /api/onvif/inspect: who it is, its streams); a stream is added as a pull proxy in one call
// (POST /api/onvif/proxies). A proxy made from a camera whose stream has PTZ gets a PTZ panel
// under its row: press and hold to move (as the wall's pad does for GB channels), presets to
// go to, save and delete. Every failure of a camera conversation says what to check. All of
// it is an operator's: a viewer's key sees none of it.

const DISCOVERY_PORT = 3702;
const ONVIF_CALLS_MAX = 8;
const PROXY_NAME_MAX = 64;
const PRESET_NAME_MAX = 64;
// gmv bounds each ONVIF move (10 s, so a lost stop cannot leave a camera turning): a button
// held longer asks again before that.
const PTZ_MOVE_AGAIN_MS = 4000;
const ovs = {
  cameras: null, probed: null, waitMs: 0, discovering: false, camRows: [], pickedName: null,
  report: null, access: null, // the camera read: its report, and {device_url, user, password, address, name}
  reads: 0, autoName: '',
  open: new Set(), // proxies whose PTZ panel is open
  panels: new Map(), // proxy name -> its PTZ panel
};

const canMove = (p) => !!(p.onvif && p.onvif.ptz) && srcs.canWrite !== false;

// A proxy's name from a camera's: letters, digits, _ and -, lower case ("Front Door" -> front-door).
function proxyNameFrom(text) {
  return String(text || '').normalize('NFKD').replace(/[\u0300-\u036f]/g, '').toLowerCase()
    .replace(/[^a-z0-9_-]+/g, '-').replace(/-{2,}/g, '-').replace(/^[-_]+|[-_]+$/g, '').slice(0, PROXY_NAME_MAX);
}
// The name, made free among the proxies there are (front-door, front-door-2, ...).
function freeProxyName(base) {
  const taken = new Set((srcs.proxies || []).map((p) => p.name));
  if (!taken.has(base)) return base;
  for (let i = 2; ; i++) {
    const tail = `-${i}`;
    const name = base.slice(0, PROXY_NAME_MAX - tail.length) + tail;
    if (!taken.has(name)) return name;
  }
}

// The probe address as the API takes it (ip:port): a bare address gets the discovery port.
function probeAddress(text) {
  let s = String(text || '').trim().replace(/^[a-z][a-z0-9+.-]*:\/\//i, '').replace(/\/.*$/, '');
  if (!s) return null;
  if (/^\[[^\]]*\]$/.test(s)) return `${s}:${DISCOVERY_PORT}`;
  if ((s.match(/:/g) || []).length > 1) return `[${s}]:${DISCOVERY_PORT}`; // a bare IPv6 address
  if (!s.includes(':')) return `${s}:${DISCOVERY_PORT}`;
  return s;
}

// The device address as typed, made whole: http:// and the usual path added when left out.
// {url, address (host:port)}, or {empty}, {https}, {bad}.
function deviceAddress(text) {
  let s = String(text || '').trim();
  if (!s) return { empty: true };
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(s)) s = `http://${s}`;
  let u;
  try { u = new URL(s); } catch (_) { return { bad: true }; }
  if (u.protocol === 'https:') return { https: true };
  if (u.protocol !== 'http:' || !u.hostname) return { bad: true };
  if (u.pathname === '/' && !u.search) u.pathname = '/onvif/device_service';
  return { url: u.href, address: `${u.hostname}:${u.port || 80}` };
}
const addressOf = (url) => { const d = deviceAddress(url); return d.address || String(url || ''); };

// Why a camera conversation (or a change) failed: {title, hint} as nodes. `what` names the
// step (discover, read, add, ptz, presets, preset_go, preset_save, preset_delete); `ctx` has
// the camera's address, the proxy's name, whether the credentials are the proxy's.
function onvifProblem(err, what, ctx = {}) {
  const code = err instanceof ApiError ? err.code : null;
  const message = err instanceof ApiError ? String(err.message || '') : '';
  const address = codeEl(ctx.address || '—');
  let why;
  let hint = null;
  let m;
  if (code === 'camera_unauthorized') {
    why = [t('src.ov.why.unauthorized')];
    hint = [t(ctx.proxy ? 'src.ov.fix.unauthorized_proxy' : 'src.ov.fix.unauthorized')];
  } else if (code === 'camera_unreachable') {
    const detail = message.replace(/^the camera did not answer: /, '');
    if (/refused/i.test(detail)) why = sentence('src.ov.why.refused', { address });
    else if ((m = /no answer within (\d+) s/.exec(detail))) why = sentence('src.ov.why.timeout', { address, s: m[1] });
    else why = [...sentence('src.ov.why.unreachable', { address }), ' ', codeEl(firstLine(detail) || '—')];
    hint = [t('src.ov.fix.unreachable')];
  } else if (code === 'camera_error') {
    why = [t('src.ov.why.camera_error'), ' ', codeEl(firstLine(message.replace(/^the camera answered with an error: /, '')) || '—')];
    hint = what.startsWith('preset') ? [t('src.ov.fix.preset_error')] : sentence('src.ov.fix.camera_error', { path: codeEl('/onvif/device_service') });
  } else if (code === 'busy') {
    why = [t('src.ov.why.busy', { n: (m = /^(\d+) /.exec(message)) ? m[1] : ONVIF_CALLS_MAX })];
  } else if (code === 'no_profile') {
    why = [t('src.ov.why.no_profile')];
    hint = [t('src.ov.fix.no_profile')];
  } else if (code === 'no_stream_uri') {
    why = [t('src.ov.why.no_stream_uri'), ' ', codeEl(firstLine(message) || '—')];
    hint = [t('src.ov.fix.no_stream_uri')];
  } else if (code === 'not_onvif') {
    why = [t('src.ov.why.not_onvif')];
  } else if (code === 'no_ptz') {
    why = [t('src.ov.why.no_ptz')];
  } else if (what === 'discover' && err instanceof ApiError && err.status === 400) {
    why = sentence('src.ov.why.probe_address', { example: codeEl(`192.168.2.64:${DISCOVERY_PORT}`) });
  } else if (what === 'add') {
    why = proxyReason(err, ctx.name);
  } else if (err instanceof ApiError && err.status === 403) {
    why = [t('src.ov.why.forbidden')];
  } else if (err instanceof ApiError && err.status === 404 && ctx.proxy) {
    why = sentence('src.ov.why.gone', { name: dataSpan(ctx.proxy) });
  } else if (err instanceof ApiError && err.status === 401) {
    why = [t('src.why.unauthorized')];
  } else if (err instanceof NetworkError) {
    why = [t('src.why.network')];
  } else {
    why = readableNodes(err);
  }
  return { title: [t(`src.ov.err.${what}`), t('common.sentence_sep'), ...why], hint };
}

// A status line: `cls` ok, error or '' (working), `fn` its words: nodes, or {title, hint}
// for an explanation (said again at a switch). `raw`: the engine's words, as a title.
function ovStatus(box, cls, fn, raw) {
  box.className = `status ${cls || ''}`;
  if (raw) { box.title = raw; box.setAttribute('data-raw', ''); } else { box.removeAttribute('title'); box.removeAttribute('data-raw'); }
  say(box, () => {
    const v = fn ? fn() : '';
    if (!v || Array.isArray(v) || typeof v === 'string') return v || '';
    return [el('div', { class: 'problem' }, el('div', {}, el('strong', {}, ...v.title)),
      ...(v.hint && v.hint.length ? [el('div', { class: 'problem-hint' }, ...v.hint)] : []))];
  });
}
const rawOf = (err) => (err instanceof ApiError && err.message ? t('src.perr.raw', { raw: err.message }) : '');
function ovFailed(box, err, what, ctx) {
  learnViewer(err);
  ovStatus(box, 'error', () => onvifProblem(err, what, ctx), rawOf(err));
}

// ---- 1. find ----

$('#ov-discover-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  if (ovs.discovering) return;
  const box = $('#ov-discover-status');
  const address = probeAddress($('#ov-probe').value);
  if (address) $('#ov-probe').value = address;
  ovs.discovering = true;
  $('#ov-discover').disabled = true;
  ovStatus(box, '', () => (address ? sentence('src.ov.discovering_at', { address: codeEl(address) }) : [t('src.ov.discovering_lan')]));
  try {
    const v = await api('POST', '/api/onvif/discover', address ? { address } : {});
    ovs.cameras = Array.isArray(v.cameras) ? v.cameras : [];
    ovs.probed = v.probed || address || '';
    ovs.waitMs = v.wait_ms || 0;
    const params = () => ({ probed: codeEl(ovs.probed), s: Math.round(ovs.waitMs / 100) / 10, n: ovs.cameras.length });
    if (ovs.cameras.length) ovStatus(box, 'ok', () => sentence('src.ov.found', params()));
    else ovStatus(box, '', () => ({ title: sentence('src.ov.found_none', params()), hint: [t(address ? 'src.ov.none_hint_at' : 'src.ov.none_hint_lan')] }));
  } catch (err) {
    ovs.cameras = null;
    ovFailed(box, err, 'discover', { address });
  } finally {
    ovs.discovering = false;
    $('#ov-discover').disabled = false;
    renderOvCameras();
  }
});

function renderOvCameras() {
  const table = $('#ov-cameras');
  table.hidden = !ovs.cameras || !ovs.cameras.length;
  ovs.camRows = [];
  if (table.hidden) { $('#ov-camera-rows').replaceChildren(); return; }
  const picked = ovs.access ? ovs.access.device_url : deviceAddress($('#ov-device').value).url;
  $('#ov-camera-rows').replaceChildren(...ovs.cameras.map((c, i) => {
    const r = { c, cells: {}, heads: [], added: el('div', { class: 'muted', dataset: { testid: `ov-added-${i}` } }) };
    const use = el('button', { type: 'button', dataset: { testid: `ov-use-${i}` }, title: t('src.ov.use_title'), onclick: () => useCamera(c) }, t('src.ov.use'));
    use.disabled = !c.device_url;
    const node = el('tr', { dataset: { testid: `ov-cam-${i}`, name: c.name || '' } },
      cell(r, 'name', 'src.ov.h.name'), cell(r, 'hardware', 'src.ov.h.hardware'), cell(r, 'url', 'src.ov.h.address'),
      el('td', { class: 'actions' }, el('div', { class: 'v' }, use)));
    labelCells(r);
    r.cells.name.replaceChildren(c.name ? el('strong', { class: 'data' }, c.name) : el('span', { class: 'muted' }, t('src.ov.no_name')), r.added);
    r.cells.hardware.replaceChildren(c.hardware ? dataSpan(c.hardware) : '—');
    const others = (c.xaddrs || []).filter((x) => x !== c.device_url);
    r.cells.url.replaceChildren(c.device_url ? codeEl(c.device_url) : el('span', { class: 'muted' }, t('src.ov.no_address')),
      ...others.map((x) => el('div', {}, el('code', { class: 'muted' }, x))));
    node.classList.toggle('editing', !!picked && picked === c.device_url);
    ovs.camRows.push(r);
    return node;
  }));
  renderOvAdded();
}
// Which proxies were made from each camera found (as the list says now): only that line changes.
function renderOvAdded() {
  for (const r of ovs.camRows || []) {
    const names = (srcs.proxies || []).filter((p) => p.onvif && r.c.device_url && p.onvif.device_url === r.c.device_url).map((p) => p.name);
    const key = `${lang}|${names.join(',')}`;
    if (r.added.dataset.shown === key) continue;
    r.added.dataset.shown = key;
    r.added.hidden = !names.length;
    r.added.replaceChildren(...(names.length ? sentence('src.ov.added_as', { name: dataSpan(names.join(t('common.list_sep'))) }) : []));
  }
}

// A camera found: its address into the form, the name it gives kept for the proxy's.
function useCamera(c) {
  if (!c.device_url) return;
  $('#ov-device').value = c.device_url;
  ovs.pickedName = c.name || null;
  forgetReport();
  ovStatus($('#ov-inspect-status'), null);
  ovStatus($('#ov-add-status'), null);
  renderOvCameras();
  $('#ov-inspect-form').scrollIntoView({ block: 'nearest' });
  ($('#ov-user').value ? $('#ov-password') : $('#ov-user')).focus();
}

// ---- 2. read ----

function renderDeviceNote() {
  say($('#ov-device-note'), () => sentence('src.ov.device_note', { example: codeEl('http://IP/onvif/device_service') }));
}

// What was read is forgotten once the address, user or password change: adding takes what
// was read.
function forgetReport(stale = false) {
  if (!ovs.report) return;
  ovs.report = null;
  ovs.access = null;
  ovs.reads += 1;
  renderOvReport();
  if (stale) ovStatus($('#ov-inspect-status'), '', () => [t('src.ov.stale')]);
  else ovStatus($('#ov-inspect-status'), null);
  ovStatus($('#ov-add-status'), null);
}
for (const id of ['#ov-device', '#ov-user', '#ov-password']) $(id).addEventListener('input', () => forgetReport(true));
$('#ov-device').addEventListener('input', () => { ovs.pickedName = null; });

$('#ov-inspect-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const box = $('#ov-inspect-status');
  const d = deviceAddress($('#ov-device').value);
  if (d.empty) return ovStatus(box, 'error', () => [t('src.ov.need_device')]);
  if (d.https) return ovStatus(box, 'error', () => sentence('src.ov.https', { http: codeEl('http://') }));
  if (d.bad) return ovStatus(box, 'error', () => sentence('src.ov.bad_device', { example: codeEl('http://192.168.1.64/onvif/device_service') }));
  $('#ov-device').value = d.url;
  const access = { device_url: d.url, user: $('#ov-user').value.trim(), password: $('#ov-password').value, address: d.address };
  const load = ++ovs.reads;
  ovs.report = null;
  ovs.access = null;
  renderOvReport();
  ovStatus($('#ov-add-status'), null);
  ovStatus(box, '', () => sentence('src.ov.reading', { address: codeEl(d.address) }));
  $('#ov-inspect').disabled = true;
  try {
    const report = await api('POST', '/api/onvif/inspect', { device_url: access.device_url, user: access.user, password: access.password });
    if (load !== ovs.reads) return; // changed meanwhile
    const found = (ovs.cameras || []).find((c) => c.device_url === access.device_url);
    access.name = ovs.pickedName || (found && found.name) || null;
    ovs.report = report;
    ovs.access = access;
    fillAddForm();
    const camera = [report.manufacturer, report.model].filter(Boolean).join(' ') || d.address;
    ovStatus(box, 'ok', () => sentence('src.ov.read_done', { camera: dataSpan(camera), n: (report.profiles || []).length }));
  } catch (err) {
    if (load !== ovs.reads) return;
    ovFailed(box, err, 'read', { address: d.address });
  } finally {
    $('#ov-inspect').disabled = false;
    renderOvReport();
    renderOvCameras();
  }
});

function renderOvReport() {
  const v = ovs.report;
  $('#ov-report').hidden = !v;
  if (!v) return;
  const row = (key, value, testid) => [el('dt', {}, t(key)), el('dd', { dataset: { testid } }, value)];
  $('#ov-info').replaceChildren(
    ...row('src.ov.info.camera', el('span', { class: 'data' }, [v.manufacturer, v.model].filter(Boolean).join(' ') || '—'), 'ov-camera'),
    ...row('src.ov.info.firmware', codeEl(v.firmware), 'ov-firmware'),
    ...row('src.ov.info.serial', codeEl(v.serial), 'ov-serial'),
    ...row('src.ov.info.address', codeEl(v.device_url), 'ov-address'));
  const profiles = v.profiles || [];
  $('#ov-profile-rows').replaceChildren(...profiles.map((p) => {
    const r = { cells: {}, heads: [] };
    const node = el('tr', { dataset: { testid: `ov-profile-${p.token}` } },
      cell(r, 'name', 'src.ov.h.profile'), cell(r, 'encoding', 'src.ov.h.encoding'), cell(r, 'resolution', 'src.ov.h.resolution'),
      cell(r, 'has-ptz', 'src.ov.h.ptz'), cell(r, 'url', 'src.ov.h.stream_uri'));
    labelCells(r);
    r.cells.name.replaceChildren(el('strong', { class: 'data' }, p.name || p.token), ' ', el('code', { class: 'muted' }, p.token));
    r.cells.encoding.replaceChildren(codeEl(p.encoding));
    r.cells.resolution.replaceChildren(p.width && p.height ? el('span', { class: 'data', dataset: { testid: `ov-res-${p.token}` } }, `${p.width}×${p.height}`) : '—');
    r.cells['has-ptz'].replaceChildren(el('span', { dataset: { testid: `ov-ptz-${p.token}` } }, t(p.ptz ? 'src.ov.yes' : 'src.ov.no')));
    r.cells.url.replaceChildren(...(p.stream_uri ? [codeEl(p.stream_uri)]
      : [el('span', { class: 'muted' }, t('src.ov.no_uri')), ' ', codeEl(firstLine(p.stream_uri_error || '—'))]));
    return node;
  }));
}

// ---- 3. add ----

// The form for the camera read: its streams (the first with an address chosen, as the API
// would), a free name from the camera's (or its model's, or its address's).
function fillAddForm() {
  const v = ovs.report;
  const select = $('#ov-profile');
  const profiles = v.profiles || [];
  select.replaceChildren(...profiles.map((p) => {
    const o = el('option', { value: p.token }, [p.name || p.token, p.encoding, p.width && p.height ? `${p.width}×${p.height}` : ''].filter(Boolean).join(' · '));
    o.disabled = !p.stream_uri;
    return o;
  }));
  const first = profiles.find((p) => p.stream_uri);
  if (first) select.value = first.token;
  ovs.autoName = suggestedName();
  $('#ov-name').value = ovs.autoName;
  renderOvIdle();
}
function suggestedName() {
  const a = ovs.access;
  const v = ovs.report;
  if (!a || !v) return '';
  const base = proxyNameFrom(a.name) || proxyNameFrom(v.model) || proxyNameFrom(`camera-${a.address.replace(/:80$/, '')}`) || 'camera';
  const profiles = v.profiles || [];
  const chosen = profiles.find((p) => p.token === $('#ov-profile').value);
  const first = profiles.find((p) => p.stream_uri);
  // Another stream than the main one: its token after the camera's name (front-door-sub).
  const tail = chosen && first && chosen !== first ? proxyNameFrom(chosen.token) : '';
  return freeProxyName(tail ? `${base.slice(0, PROXY_NAME_MAX - tail.length - 1)}-${tail}` : base);
}
$('#ov-profile').addEventListener('change', () => {
  if (!$('#ov-name').value || $('#ov-name').value === ovs.autoName) { ovs.autoName = suggestedName(); $('#ov-name').value = ovs.autoName; }
});
function renderOvIdle() {
  const onDemand = $('#ov-mode').value === 'on_demand';
  $('#ov-idle').disabled = !onDemand;
  $('#ov-idle-row').classList.toggle('off', !onDemand);
}
$('#ov-mode').addEventListener('change', renderOvIdle);

$('#ov-add-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const box = $('#ov-add-status');
  const a = ovs.access;
  if (!a || !ovs.report) return ovStatus(box, 'error', () => [t('src.ov.stale')]);
  const name = $('#ov-name').value.trim();
  const profile = $('#ov-profile').value;
  const mode = $('#ov-mode').value;
  const idle = $('#ov-idle').value.trim();
  if (!name) return ovStatus(box, 'error', () => [t('src.f.need_name')]);
  if (!/^[A-Za-z0-9_-]+$/.test(name) || name.length > PROXY_NAME_MAX) return ovStatus(box, 'error', () => sentence('src.why.name'));
  if ((srcs.proxies || []).some((p) => p.name === name)) return ovStatus(box, 'error', () => sentence('src.why.exists', { name: dataSpan(name) }));
  if (!profile) return ovStatus(box, 'error', () => [t('src.ov.need_stream')]);
  if (mode === 'on_demand' && idle && !/^\d+$/.test(idle)) return ovStatus(box, 'error', () => [t('src.why.idle')]);
  const body = { name, device_url: a.device_url, user: a.user, password: a.password, profile, transport: $('#ov-transport').value, mode };
  if (mode === 'on_demand' && idle) body.idle_s = Number(idle);
  ovStatus(box, '', () => [t('src.ov.adding')]);
  $('#ov-add').disabled = true;
  try {
    const made = await api('POST', '/api/onvif/proxies', body);
    const ptz = !!(made && made.onvif && made.onvif.ptz);
    ovStatus(box, 'ok', () => [...sentence('src.ov.added', { name: dataSpan(name) }), ...(ptz ? [t('common.sentence_sep'), t('src.ov.added_ptz')] : [])]);
    // Another stream of the same camera may follow: the name left empty, filled when another
    // stream is chosen.
    $('#ov-name').value = '';
    reloadSources();
  } catch (err) {
    ovFailed(box, err, 'add', { address: a.address, name });
  } finally {
    $('#ov-add').disabled = false;
  }
});

// ---- PTZ of a proxy made from a camera ----

// The camera a proxy was made from, under its address: a line in its row.
function onvifLine(p) {
  const o = p.onvif;
  if (!o) return [];
  // The camera by its host (the whole device address as the title).
  let host = String(o.device_url || '—');
  try { host = new URL(o.device_url).host || host; } catch (_) { /* shown as it is */ }
  const device = el('code', { title: String(o.device_url || ''), 'data-raw': '' }, host);
  return [el('div', { class: 'muted onvif-line', dataset: { testid: `proxy-onvif-${p.name}` } },
    ...sentence('src.ov.onvif_line', { device, profile: codeEl(o.profile) }),
    ...(o.ptz ? [] : [' ', t('src.ov.no_ptz_note')]))];
}

function togglePtz(name) {
  if (ovs.open.has(name)) {
    ovs.open.delete(name);
    const x = ovs.panels.get(name);
    if (x) x.releaseAll();
  } else {
    ovs.open.add(name);
    loadOvPresets(ptzPanel(name));
  }
  renderSources();
}

// Press and hold `button`: `send(move)` when pressed (again every `repeatMs` while held, when
// given), `send(its stop)` when let go (pointer, touch, or Space/Enter). The pointer is
// captured, so letting go anywhere stops. Gives the release (for a panel closing mid-move).
function holdToMove(button, send, move, repeatMs = 0) {
  let held = false;
  let again = null;
  const press = (e) => {
    if (e.button !== undefined && e.button !== 0) return;
    e.preventDefault();
    if (held) return;
    held = true;
    if (e.pointerId !== undefined) { try { button.setPointerCapture(e.pointerId); } catch (_) { /* not capturable: pointerup still stops */ } }
    button.classList.add('held');
    send(move);
    if (repeatMs) again = setInterval(() => send(move, true), repeatMs);
  };
  const release = () => {
    if (!held) return;
    held = false;
    clearInterval(again);
    button.classList.remove('held');
    send(ptzStop(move));
  };
  button.addEventListener('pointerdown', press);
  for (const ev of ['pointerup', 'pointercancel', 'lostpointercapture', 'blur']) button.addEventListener(ev, release);
  button.addEventListener('keydown', (e) => { if ((e.key === ' ' || e.key === 'Enter') && !e.repeat) press(e); });
  button.addEventListener('keyup', (e) => { if (e.key === ' ' || e.key === 'Enter') release(); });
  button.addEventListener('contextmenu', (e) => e.preventDefault());
  return release;
}

// A proxy's PTZ panel (made once, kept while the proxy is): the pad, zoom, speed, presets.
function ptzPanel(name) {
  let x = ovs.panels.get(name);
  if (x) return x;
  const enc = encodeURIComponent(name);
  const ctx = () => {
    const p = (srcs.proxies || []).find((q) => q.name === name);
    return { proxy: name, address: p && p.onvif ? addressOf(p.onvif.device_url) : '' };
  };
  x = { name, chain: Promise.resolve(), presets: null, presetsError: null, loads: 0, armed: null, armTimer: null, releases: [] };
  x.status = el('div', { class: 'status', 'aria-live': 'polite', dataset: { testid: `ov-ptz-status-${name}` } });
  x.speed = el('input', { type: 'range', min: '0.1', max: '1', step: '0.1', value: '0.5', 'data-i18n-title': 'ptz.speed_title', title: t('ptz.speed_title'), dataset: { testid: `ov-ptz-speed-${name}` } });
  const speedValue = el('output', {}, '0.5');
  x.speed.addEventListener('input', () => { speedValue.value = x.speed.value; });
  // Moves go one after another: a stop never overtakes the move it ends. A held button's
  // repeat is skipped while an ask is still on its way (a slow camera gets no queue).
  x.pending = 0;
  x.send = (move, repeat = false) => {
    if (repeat && x.pending) return;
    const body = Object.keys(move).length ? { ...move, speed: Number(x.speed.value) || 0.5 } : {};
    if (Object.keys(body).length) ovStatus(x.status, null);
    x.chain = x.chain.then(() => api('POST', `/api/proxies/${enc}/ptz`, body).then(() => {}, (err) => ovFailed(x.status, err, 'ptz', ctx())));
    x.pending += 1;
    x.chain.then(() => { x.pending -= 1; });
  };
  x.releaseAll = () => { for (const r of x.releases) r(); };
  const hold = (dir, glyph, titleKey, text = false) => {
    const b = el('button', { type: 'button', class: 'hold', dataset: { testid: `ov-ptz-${dir}-${name}` } }, glyph);
    if (text) b.setAttribute('data-i18n', titleKey); else b.setAttribute('data-i18n-title', titleKey);
    if (text) b.textContent = t(titleKey); else b.title = t(titleKey);
    x.releases.push(holdToMove(b, x.send, PTZ_MOVES[dir], PTZ_MOVE_AGAIN_MS));
    return b;
  };
  const stop = el('button', { type: 'button', class: 'stop', 'data-i18n-title': 'src.ov.stop', title: t('src.ov.stop'), dataset: { testid: `ov-ptz-stop-${name}` }, onclick: () => x.send({}) }, '■');
  const pad = el('div', { class: 'pad' },
    hold('up-left', '↖', 'ptz.up_left'), hold('up', '▲', 'ptz.up'), hold('up-right', '↗', 'ptz.up_right'),
    hold('left', '◀', 'ptz.left'), stop, hold('right', '▶', 'ptz.right'),
    hold('down-left', '↙', 'ptz.down_left'), hold('down', '▼', 'ptz.down'), hold('down-right', '↘', 'ptz.down_right'));
  const zoom = el('div', { class: 'zoom' }, hold('in', '', 'ptz.zoom_in', true), hold('out', '', 'ptz.zoom_out', true));
  const speed = el('label', { class: 'ptz-speed' }, el('span', { 'data-i18n': 'ptz.speed' }, t('ptz.speed')), ' ', x.speed, ' ', speedValue);
  x.list = el('ul', { class: 'presets', dataset: { testid: `ov-presets-${name}` } });
  x.presetName = el('input', { maxlength: String(PRESET_NAME_MAX), autocomplete: 'off', 'data-i18n-placeholder': 'src.ov.preset_name_ph', placeholder: t('src.ov.preset_name_ph'), dataset: { testid: `ov-preset-name-${name}` } });
  const save = el('button', { type: 'submit', 'data-i18n': 'src.ov.preset_save', 'data-i18n-title': 'src.ov.preset_save_title', title: t('src.ov.preset_save_title'), dataset: { testid: `ov-preset-save-${name}` } }, t('src.ov.preset_save'));
  const saveForm = el('form', { class: 'zoom preset-save', novalidate: '', onsubmit: (e) => { e.preventDefault(); savePreset(x, ctx); } }, x.presetName, save);
  const title = say(el('strong', {}), () => sentence('src.ov.ptz_title', { name: dataSpan(name) }));
  const close = el('button', { type: 'button', 'data-i18n': 'src.ov.ptz_close', dataset: { testid: `ov-ptz-close-${name}` }, onclick: () => togglePtz(name) }, t('src.ov.ptz_close'));
  x.ctx = ctx;
  x.enc = enc;
  x.node = el('tr', { class: 'ptz-row', dataset: { testid: `ptz-panel-${name}` } },
    el('td', { colspan: '8', class: 'ptz-cell' }, el('div', { class: 'ov-ptz' },
      el('div', { class: 'ov-ptz-head' }, title, el('span', { class: 'muted', 'data-i18n': 'src.ov.ptz_hint' }, t('src.ov.ptz_hint')), close),
      el('div', { class: 'ov-ptz-body' },
        el('div', { class: 'ptz' }, pad, zoom, speed),
        el('div', { class: 'ov-presets' }, el('h4', { 'data-i18n': 'ptz.presets' }, t('ptz.presets')), x.list, saveForm)),
      x.status)));
  ovs.panels.set(name, x);
  renderOvPresets(x);
  return x;
}

async function loadOvPresets(x) {
  const load = ++x.loads;
  if (!x.presets) renderOvPresets(x);
  try {
    const v = await api('GET', `/api/proxies/${x.enc}/presets`);
    if (load !== x.loads) return;
    x.presets = Array.isArray(v.presets) ? v.presets : [];
    x.presetsError = null;
  } catch (err) {
    if (load !== x.loads) return;
    x.presetsError = err;
  }
  renderOvPresets(x);
}

function renderOvPresets(x) {
  if (x.presetsError) {
    x.list.replaceChildren(el('li', { class: 'error' }, el('div', { class: 'problem' }, ...(() => {
      const v = onvifProblem(x.presetsError, 'presets', x.ctx());
      return [el('div', {}, el('strong', {}, ...v.title)), ...(v.hint ? [el('div', { class: 'problem-hint' }, ...v.hint)] : [])];
    })())));
    return;
  }
  if (!x.presets) { x.list.replaceChildren(el('li', { class: 'muted' }, t('ptz.asking'))); return; }
  if (!x.presets.length) { x.list.replaceChildren(el('li', { class: 'muted' }, t('ptz.no_presets'))); return; }
  x.list.replaceChildren(...x.presets.map((p) => {
    const label = p.name || p.token;
    const armed = x.armed === p.token;
    return el('li', { dataset: { testid: `ov-preset-${x.name}-${p.token}`, name: p.name || '' } },
      el('span', { class: 'data' }, label),
      el('button', { type: 'button', title: t('ptz.go_title'), dataset: { testid: `ov-preset-go-${x.name}-${p.token}` }, onclick: () => callPreset(x, p) }, t('ptz.go')),
      el('button', { type: 'button', class: armed ? 'danger' : '', title: t('ptz.delete'), dataset: { testid: `ov-preset-del-${x.name}-${p.token}` }, onclick: () => deletePreset(x, p) },
        armed ? t('src.delete_confirm') : t('ptz.delete')));
  }));
}

async function presetCall(x, method, path, body, what, done) {
  ovStatus(x.status, '', () => [t('ptz.asking')]);
  try {
    await api(method, path, body);
    ovStatus(x.status, 'ok', done);
    return true;
  } catch (err) {
    ovFailed(x.status, err, what, x.ctx());
    if (err instanceof ApiError && err.code === 'camera_error') loadOvPresets(x);
    return false;
  }
}
function callPreset(x, p) {
  presetCall(x, 'POST', `/api/proxies/${x.enc}/presets/${encodeURIComponent(p.token)}/call`, {}, 'preset_go', () => sentence('src.ov.preset_went', { name: dataSpan(p.name || p.token) }));
}
async function savePreset(x) {
  const name = x.presetName.value.trim();
  if (!name || name.length > PRESET_NAME_MAX) return ovStatus(x.status, 'error', () => [t('src.ov.need_preset_name')]);
  if (await presetCall(x, 'POST', `/api/proxies/${x.enc}/presets`, { name }, 'preset_save', () => sentence('src.ov.preset_saved', { name: dataSpan(name) }))) {
    x.presetName.value = '';
    loadOvPresets(x);
  }
}
// Deleted on the second click within a few seconds (the first asks).
async function deletePreset(x, p) {
  clearTimeout(x.armTimer);
  if (x.armed !== p.token) {
    x.armed = p.token;
    x.armTimer = setTimeout(() => { x.armed = null; renderOvPresets(x); }, REMOVE_ARMED_MS);
    renderOvPresets(x);
    return;
  }
  x.armed = null;
  renderOvPresets(x);
  if (await presetCall(x, 'DELETE', `/api/proxies/${x.enc}/presets/${encodeURIComponent(p.token)}`, undefined, 'preset_delete',
    () => sentence('src.ov.preset_deleted', { name: dataSpan(p.name || p.token) }))) loadOvPresets(x);
}

// Left for another view: nothing keeps moving.
function releasePtz() {
  for (const x of ovs.panels.values()) x.releaseAll();
}
document.addEventListener('visibilitychange', () => { if (document.hidden) releasePtz(); });

renderDeviceNote();
renderOvIdle();

// What is shown follows a switch at once (not at the next refresh).
onLanguage(() => {
  if (srcs.proxies || srcs.streams) renderSources();
  renderIssued();
  renderOvCameras();
  renderOvReport();
  for (const x of ovs.panels.values()) renderOvPresets(x);
});
renderProxyFormTitle();

// Signed in already (this tab's key, or a user's session cookie)? Else the sign-in screen.
start();
