// huddle's screen: state, the API, the live event stream, the idle lock and
// unlocking with the passphrase or the PIN.
import { h, time, nameOf, conversationItem, messageItem, peerRow, memberItem } from './views.js';
import * as attach from './attach.js';

const PAGE = 50;
const $ = (id) => document.getElementById(id);

const S = {
  csrf: null, lockAfter: 300000, lastInput: Date.now(), aliveSent: 0,
  status: null, dir: new Map(), chats: [], peers: [],
  open: null, messages: [], more: false, pending: [], replyTo: null,
  leftAt: new Map(), live: false, locked: false, admin: false, unlockWith: null, draft: '', screen: 'chats',
  shown: new Map(), dirVersion: 0, alerts: [], oncall: [], fetching: new Set(),
};

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(method, path, body) {
  const headers = {};
  if (method !== 'GET') headers['x-huddle-csrf'] = S.csrf;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'same-origin',
  });
  const data = await res.json().catch(() => ({}));
  if (res.status === 401) { if (!S.locked) lock('refused'); throw new ApiError(401, data.error || 'signed out'); }
  if (!res.ok) throw new ApiError(res.status, data.error || `the node answered ${res.status}`);
  return data;
}

// Several triggers, one request in flight: a refresh asked for while one
// runs is run once more after it, never dropped and never piled up.
function coalesce(fn) {
  let running = null; let again = false;
  const run = async () => {
    if (running) { again = true; return running; }
    running = (async () => {
      do { again = false; try { await fn(); } catch (e) { if (!(e instanceof ApiError && e.status === 401)) console.warn(e); } } while (again);
    })();
    try { await running; } finally { running = null; }
  };
  return run;
}

// ---- reading state ----

const refreshChats = coalesce(async () => { S.chats = await api('GET', '/v1/conversations'); renderChats(); });
const refreshDirectory = coalesce(async () => {
  const dir = await api('GET', '/v1/directory');
  S.dir = new Map(dir.map((m) => [m.member, m]));
  S.dirVersion += 1;
  renderTeam(); renderThread();
});
const refreshPeers = coalesce(async () => { S.peers = await api('GET', '/v1/peers'); renderPeers(); renderStatus(); });
// Re-reads the newest `limit` messages of the open conversation (at least a
// page; several asks while one read runs become one read of the largest)
// and merges them into what is shown: a new message costs a page, not the
// whole history; receipts ask for as much as is shown (bounded).
let wantLimit = 0;
function refreshThread(limit = PAGE) {
  wantLimit = Math.max(wantLimit, limit);
  return readThread();
}
const readThread = coalesce(async () => {
  if (!S.open) return;
  const id = S.open;
  const limit = Math.min(Math.max(PAGE, wantLimit), 500);
  wantLimit = 0;
  const page = await api('GET', `/v1/conversations/${id}/messages?limit=${limit}`);
  if (S.open !== id) return;
  const at = page.length ? S.messages.findIndex((m) => m.id === page[0].id) : -1;
  if (at >= 0) S.messages = S.messages.slice(0, at).concat(page);
  else if (page.length < limit) { S.messages = page; S.more = false; } else { S.messages = page; S.more = true; }
  const have = new Set(page.map((m) => m.id));
  S.pending = S.pending.filter((p) => !p.id || !have.has(p.id));
  renderThread();
  markRead();
});

async function readAll() {
  S.status = await api('GET', '/v1/status');
  $('who').textContent = `${S.status.name || 'This device'} · ${S.status.team_name || 'no team'}`;
  await Promise.all([refreshDirectory(), refreshChats(), refreshPeers(), refreshThread(S.messages.length), refreshAlerts(), refreshOnCall()]);
  renderStatus();
}

async function openConversation(id) {
  S.open = id; S.messages = []; S.pending = []; S.more = false; S.replyTo = null;
  $('screen-chats').classList.add('show-thread');
  renderChats();
  const page = await api('GET', `/v1/conversations/${id}/messages?limit=${PAGE}`);
  if (S.open !== id) return;
  S.messages = page; S.more = page.length === PAGE;
  renderThread(true);
  $('body').focus();
  markRead();
}

async function older() {
  if (!S.open || !S.messages.length) return;
  const first = S.messages[0];
  const page = await api('GET', `/v1/conversations/${S.open}/messages?limit=${PAGE}&before=${first.id}`);
  S.messages = page.concat(S.messages); S.more = page.length === PAGE;
  const list = $('messages'); const from = list.scrollHeight - list.scrollTop;
  renderThread();
  list.scrollTop = list.scrollHeight - from;
}

// Marks the open conversation read while it is on screen: at once, then at
// most once a second while messages keep coming (each mark is a signed
// receipt every member's device stores).
let readSent = null; let readAt = 0; let readTimer = null;
function markRead() {
  const chat = S.chats.find((c) => c.id === S.open);
  if (!S.open || document.hidden || S.locked || !chat || chat.unread === 0) return;
  const last = S.messages.length ? S.messages[S.messages.length - 1].id : null;
  if (readSent === last || readTimer) return;
  const wait = readAt + 1000 - Date.now();
  if (wait > 0) { readTimer = setTimeout(() => { readTimer = null; markRead(); }, wait); return; }
  readSent = last; readAt = Date.now();
  api('POST', `/v1/conversations/${S.open}/read`).then(refreshChats).catch(() => { readSent = null; });
}

// ---- rendering ----

function currentChat() { return S.chats.find((c) => c.id === S.open); }

function renderChats() {
  if (S.locked) return;
  const f = $('filter').value.trim().toLowerCase();
  const list = $('conv-list');
  list.replaceChildren(...S.chats
    .filter((c) => !f || c.title.toLowerCase().includes(f) || (c.last && c.last.preview.toLowerCase().includes(f)))
    .map((c) => conversationItem(c, c.id === S.open, openConversation)));
  if (!list.children.length) list.append(h('li', { class: 'conv-last' }, f ? 'No conversation matches.' : 'No conversations yet.'));
}

function renderThread(scrollToEnd) {
  if (S.locked) return;
  const chat = currentChat();
  $('composer').hidden = !chat;
  if (!chat) { $('messages').replaceChildren(); $('older').hidden = true; return; }
  $('thread-title').textContent = chat.title;
  $('older').hidden = !S.more;
  const list = $('messages');
  const atEnd = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  const byId = new Map(S.messages.map((m) => [m.id, m]));
  const ctx = {
    me: S.status && S.status.member, dir: S.dir, conv: chat, byId, onAck: ack, onReply: reply,
    attachments: (m) => (m.id ? attach.attachmentList(m, chat.id, { fetching: S.fetching, onFetch: fetchAttachment }) : null),
  };
  // Keyed: a message whose rendering would not change keeps its element,
  // and only what changed touches the DOM (a long list stays cheap).
  const shown = new Map();
  const want = S.messages.concat(S.pending).map((m) => {
    const files = (m.attachments || []).map((a) => [a.held, a.reached, S.fetching.has(`${m.id}/${a.index}`)].join(','));
    const key = [m.delivered_to, m.read_by, m.acked_by, m.author_name, m.failed, byId.has(m.reply_to), S.dirVersion, S.replyTo === m, files.join(';')].join('|');
    const old = S.shown.get(m.id || m);
    const el = old && old.key === key ? old.el : messageItem(m, ctx);
    shown.set(m.id || m, { key, el });
    return el;
  });
  S.shown = shown;
  want.forEach((el, i) => { if (list.children[i] !== el) list.insertBefore(el, list.children[i] || null); });
  while (list.children.length > want.length) list.lastElementChild.remove();
  if (scrollToEnd || atEnd) list.scrollTop = list.scrollHeight;
  const r = S.replyTo;
  $('replying').hidden = !r;
  if (r) $('replying-text').textContent = `Replying to ${r.author_name || nameOf(S.dir, r.author)}: ${r.body.slice(0, 120)}`;
}

function renderPeers() {
  if (S.locked) return;
  $('peers-table').tBodies[0].replaceChildren(...S.peers.map((p) => peerRow(p, S.dir)));
}

function renderTeam() {
  if (!S.status || S.locked) return;
  $('my-device').textContent = S.status.device;
  const qr = `/web/qr?text=${encodeURIComponent(S.status.device)}`;
  if ($('my-qr').getAttribute('src') !== qr) $('my-qr').src = qr;
  $('admin').hidden = !S.admin;
  $('not-admin').hidden = S.admin;
  const onRevoke = S.admin ? askRevoke : null;
  const me = { member: S.status.member, device: S.status.device };
  $('members').replaceChildren(...[...S.dir.values()].map((m) => memberItem(m, me, onRevoke)));
  $('oncall-table').tBodies[0].replaceChildren(...S.oncall.map((r) => h('tr', {},
    h('td', {}, `#${r.role}`),
    h('td', {}, r.unassigned ? 'Nobody assigned: everyone holding the role is asked'
      : r.holders.map((m, i) => r.names[i] || nameOf(S.dir, m)).join(', '),
    r.conflicts.length ? h('strong', { class: 'conflict' }, ` Conflict: ${r.conflicts.length} other assignment(s) made at the same time; set who is on call again`) : null),
    h('td', {}, r.to_ms ? time(r.to_ms) : ''))));
}

const refreshOnCall = coalesce(async () => { S.oncall = await api('GET', '/v1/oncall'); renderTeam(); });

// ---- administering (a device that holds the team key) ----

let revoking = null;
function askRevoke(target, what) {
  revoking = target;
  $('revoke-what').textContent = `Revoke ${what}?`;
  $('revoke-confirm').value = '';
  $('revoke-error').textContent = '';
  $('revoke-dialog').showModal();
}

async function revoke(e) {
  e.preventDefault();
  try {
    await api('POST', '/web/admin/revoke', { ...revoking, confirm: $('revoke-confirm').value });
    $('revoke-dialog').close();
    await refreshDirectory();
  } catch (err) { $('revoke-error').textContent = err.message; }
}

async function admit(e) {
  e.preventDefault();
  $('admit-error').textContent = '';
  try {
    const r = await api('POST', '/web/admin/admit', {
      device: $('admit-device').value, name: $('admit-name').value,
      roles: $('admit-roles').value.split(',').map((x) => x.trim()).filter(Boolean),
      member: $('admit-member').value.trim() || null, expires: $('admit-expires').value,
      confirm: $('admit-confirm').value,
    });
    $('admit-confirm').value = '';
    $('admitted').hidden = false;
    $('admitted-what').textContent = `Admitted ${r.name} (device …${r.device.slice(-8)}) until ${new Date(r.expires).toLocaleDateString()}.`;
    $('admit-token').value = r.token;
    $('admit-qr').src = `/web/qr?text=${encodeURIComponent(r.token)}`;
  } catch (err) { $('admit-error').textContent = err.message; }
}

// What is true of the network, in one line.
function renderStatus() {
  if (!S.status || S.locked) return;
  const line = $('status');
  if (!S.live) { line.textContent = 'Live updates lost: reconnecting to this device\'s node…'; line.classList.add('warn'); return; }
  if (S.status.revoked) { line.textContent = 'This device\'s membership was revoked: the team accepts nothing more from it.'; line.classList.add('warn'); return; }
  const connected = new Set(S.peers.filter((p) => p.address && p.verified).map((p) => p.device));
  const others = [...S.dir.values()].filter((m) => !m.revoked);
  let total = 0; let up = 0; const down = [];
  for (const m of others) {
    const devices = m.devices.filter((d) => d !== S.status.device);
    total += devices.length;
    const on = devices.filter((d) => connected.has(d)).length;
    up += on;
    if (m.member !== S.status.member && devices.length && on === 0) {
      const since = Math.max(0, ...devices.map((d) => S.leftAt.get(d) || 0));
      down.push(since ? `${m.name}'s devices unreachable since ${time(since)}` : `${m.name}'s devices unreachable`);
    }
  }
  line.textContent = [`connected to ${up} of ${total} team devices`, ...down.slice(0, 3), down.length > 3 ? `${down.length - 3} more unreachable` : null].filter(Boolean).join(' · ');
  line.classList.toggle('warn', down.length > 0);
}

// ---- writing ----

async function send(e) {
  e.preventDefault();
  const body = $('body').value;
  if ((!body.trim() && !attach.draft.length) || !S.open) return;
  const files = attach.draft.splice(0);
  attach.renderDraft($('draft'));
  const priority = $('priority').value;
  const reply_to = S.replyTo ? S.replyTo.id : null;
  const minutes = Number($('remind').value || 0);
  const reminder = minutes ? { due_ms: Date.now() + minutes * 60000, targets: [S.status.member] } : undefined;
  const shownBody = files.length ? `${body}${body ? '\n' : ''}(${files.map((f) => f.name).join(', ')})` : body;
  const mine = { pending: true, body: shownBody, priority, reply_to, reminder, author: S.status.member, author_name: S.status.name, time_ms: Date.now(), delivered_to: [], read_by: [], acked_by: [] };
  S.pending.push(mine);
  $('body').value = ''; $('priority').value = 'routine'; $('remind').value = ''; S.replyTo = null; $('send-error').textContent = '';
  renderThread(true);
  try {
    const attachments = files.length ? await attach.upload(S.csrf, files) : undefined;
    const r = await api('POST', `/v1/conversations/${S.open}/messages`, { body, priority, reply_to, reminder, attachments });
    mine.id = r.id;
    await refreshThread();
  } catch (err) {
    mine.failed = err.message;
    $('send-error').textContent = `Not sent: ${err.message}`;
    if (!$('body').value) $('body').value = body;
    attach.draft.unshift(...files.slice(0, 4 - attach.draft.length));
    attach.renderDraft($('draft'));
    S.pending = S.pending.filter((p) => p !== mine);
    renderThread();
  }
}

async function ack(m) {
  try {
    await api('POST', `/v1/conversations/${S.open}/messages/${m.id}/ack`);
    await refreshThread(S.messages.length);
    refreshChats();
  } catch (err) { $('send-error').textContent = `Not acknowledged: ${err.message}`; }
}

function reply(m) { S.replyTo = m; renderThread(); $('body').focus(); }

// Fetches an attachment from the team's devices, then shows it.
async function fetchAttachment(m, a) {
  const key = `${m.id}/${a.index}`;
  const conv = S.open;
  S.fetching.add(key); renderThread();
  try {
    await api('POST', `/v1/conversations/${conv}/messages/${m.id}/attachments/${a.index}/fetch`);
  } catch (err) { $('send-error').textContent = `Not fetched: ${err.message}`; }
  S.fetching.delete(key);
  if (S.open === conv) await refreshThread(S.messages.length);
}

// ---- the new-conversation dialog ----

function openNewDialog() {
  $('new-form').reset();
  const others = [...S.dir.values()].filter((m) => !m.revoked && m.member !== S.status.member);
  $('new-with').replaceChildren(...others.map((m) => h('option', { value: m.member }, m.name)));
  $('new-members').replaceChildren(...others.map((m) => h('label', {}, h('input', { type: 'checkbox', value: m.member }), ` ${m.name}`)));
  const roles = [...new Set([...S.dir.values()].flatMap((m) => m.roles))].sort();
  $('new-role').replaceChildren(...roles.map((r) => h('option', { value: r }, r)));
  $('new-error').textContent = '';
  showKind();
  $('new-dialog').showModal();
}

function showKind() {
  const kind = document.querySelector('input[name=kind]:checked').value;
  for (const el of document.querySelectorAll('[data-kind]')) el.hidden = el.dataset.kind !== kind;
}

async function createConversation(e) {
  e.preventDefault();
  const kind = document.querySelector('input[name=kind]:checked').value;
  let req;
  if (kind === 'direct') req = { kind, with: $('new-with').value };
  else if (kind === 'group') {
    req = { kind, title: $('new-title-input').value.trim(), members: [...document.querySelectorAll('#new-members input:checked')].map((i) => i.value) };
  } else req = { kind, role: $('new-role').value };
  try {
    const { id } = await api('POST', '/v1/conversations', req);
    $('new-dialog').close();
    await refreshChats();
    await openConversation(id);
  } catch (err) { $('new-error').textContent = err.message; }
}

// ---- live ----

let stream = null;
function connect() {
  if (stream) stream.close();
  stream = new EventSource('/v1/events');
  stream.onopen = () => { const was = S.live; S.live = true; if (!was) readAll().catch(() => {}); renderStatus(); };
  stream.onerror = () => {
    S.live = false; renderStatus();
    // Closed for good (the session locked or the node stopped): find out which.
    if (stream.readyState === EventSource.CLOSED) setTimeout(checkSession, 1000);
  };
  const on = (name, fn) => stream.addEventListener(name, (ev) => fn(JSON.parse(ev.data)));
  on('message_added', (e) => {
    if (e.conversation === S.open) refreshThread();
    refreshChats();
    if (!e.local && e.priority !== 'routine') notify(e);
  });
  on('sent', (e) => { if (e.conversation === S.open) refreshThread(); });
  on('attachment_held', (e) => { if (e.conversation === S.open) refreshThread(S.messages.length); });
  on('alert', (e) => { refreshAlerts(); ring(); notify(e, `Still waiting for your acknowledgement (${e.n}/${e.of})`); });
  on('reminder', (e) => { refreshAlerts(); ring(); notify({ ...e, priority: 'reminder', author: null }, 'A reminder is due'); });
  on('alerts_changed', () => refreshAlerts());
  on('receipts_changed', (e) => { if (e.conversation === S.open) refreshThread(S.messages.length); refreshChats(); refreshAlerts(); });
  on('conversation_added', () => refreshChats());
  on('peer_joined', () => refreshPeers());
  on('peer_left', (e) => { S.leftAt.set(e.peer, Date.now()); refreshPeers(); });
  on('revoked', () => { readAll().catch(() => {}); });
  on('lagged', () => { readAll().catch(() => {}); });
}

async function checkSession() {
  if (S.locked) return;
  try {
    const s = await api('GET', '/web/session');
    if (s.locked) lock('refused'); else connect();
  } catch (e) { if (!(e instanceof ApiError && e.status === 401)) setTimeout(checkSession, 3000); }
}

function notify(e, what) {
  if (!('Notification' in window) || Notification.permission !== 'granted' || !document.hidden) return;
  const chat = S.chats.find((c) => c.id === e.conversation);
  const from = e.author ? `From ${nameOf(S.dir, e.author)}: ` : '';
  const n = new Notification(`${e.priority.toUpperCase()} in ${chat ? chat.title : 'huddle'}`, {
    body: `${from}${what || 'open huddle to read and acknowledge'}`, requireInteraction: true, tag: e.message,
  });
  n.onclick = () => { window.focus(); openConversation(e.conversation); };
}

// ---- what waits for you: the banner, its sound ----

const refreshAlerts = coalesce(async () => { S.alerts = await api('GET', '/v1/alerts'); renderAlerts(); });

function renderAlerts() {
  if (S.locked) return;
  $('alerts').hidden = S.alerts.length === 0;
  $('alert-list').replaceChildren(...S.alerts.map((a) => {
    const kind = a.kind === 'reminder' ? 'reminder' : a.priority;
    const label = a.kind === 'reminder' ? 'REMINDER' : (a.priority === 'stat' ? 'STAT' : 'URGENT');
    const from = a.author_name || 'a member';
    const what = a.kind === 'reminder'
      ? `in ${a.conversation_title}, due ${time(a.due_ms)}: ${a.preview}`
      : `from ${from} in ${a.conversation_title}, ${time(a.time_ms)}${a.escalation_level ? ` (escalation level ${a.escalation_level})` : ''}: ${a.preview}`;
    const act = (text, fn) => h('button', { type: 'button', onclick: fn }, text);
    const buttons = a.kind === 'reminder'
      ? [act('Done', () => remind(a, 'done')), act('Snooze 15 min', () => remind(a, 'snooze'))]
      : [act('Acknowledge', () => ackAlert(a))];
    return h('li', { 'data-message': a.message },
      h('span', { class: `badge ${kind}` }, label),
      h('span', { class: 'what' }, what),
      act('Open', () => openConversation(a.conversation)), ...buttons);
  }));
}

async function ackAlert(a) {
  try {
    await api('POST', `/v1/conversations/${a.conversation}/messages/${a.message}/ack`);
    refreshAlerts(); refreshChats();
    if (a.conversation === S.open) refreshThread(S.messages.length);
  } catch (err) { $('status').textContent = `Not acknowledged: ${err.message}`; }
}

async function remind(a, how) {
  const body = how === 'done' ? { occurrence: a.occurrence } : { occurrence: a.occurrence, until_ms: Date.now() + 15 * 60000 };
  try { await api('POST', `/v1/conversations/${a.conversation}/messages/${a.message}/${how}`, body); refreshAlerts(); } catch (err) { $('status').textContent = `Not saved: ${err.message}`; }
}

// A short two-tone chime (no audio file: none is fetched). Browsers allow
// sound only after someone used the page; before that it stays silent and
// the banner and notification still say it.
let audio = null;
function ring() {
  try {
    audio = audio || new AudioContext();
    const at = audio.currentTime;
    for (const [i, f] of [880, 660].entries()) {
      const o = audio.createOscillator(); const g = audio.createGain();
      o.frequency.value = f; g.gain.setValueAtTime(0.2, at + i * 0.25); g.gain.exponentialRampToValueAtTime(0.001, at + i * 0.25 + 0.22);
      o.connect(g).connect(audio.destination); o.start(at + i * 0.25); o.stop(at + i * 0.25 + 0.24);
    }
  } catch { /* no audio here: the banner says it */ }
}

// ---- the lock ----

// Locks the page: everything a person could read goes from the DOM (the
// page behind the lock is hidden and inert), then the lock screen asks for
// the passphrase or PIN, or says to sign in again. `why`: 'idle' (the timer
// or the Lock button: the node is told), 'refused' (the node refused a
// request: it locked, or the session is gone: asked which), 'signed-out',
// 'link-used'.
async function lock(why) {
  if (!S.locked) {
    S.locked = true;
    if (stream) { stream.close(); stream = null; }
    S.live = false;
    const app = $('app');
    app.hidden = true; app.inert = true; app.setAttribute('aria-hidden', 'true');
    for (const d of document.querySelectorAll('dialog[open]')) d.close();
    S.draft = $('body').value; $('body').value = '';
    S.chats = []; S.messages = []; S.alerts = []; S.peers = []; S.oncall = []; S.shown = new Map();
    for (const id of ['conv-list', 'messages', 'alert-list', 'members', 'draft', 'replying-text', 'who']) $(id).replaceChildren();
    for (const t of ['peers-table', 'oncall-table']) $(t).tBodies[0].replaceChildren();
    $('thread-title').textContent = 'Choose a conversation';
    $('admit-token').value = ''; $('admitted').hidden = true; $('alerts').hidden = true;
    $('locked').hidden = false;
    document.title = 'huddle (locked)';
  }
  if (why === 'link-used' || why === 'signed-out') return lockedFor(why);
  if (why === 'idle') await fetch('/web/lock', { method: 'POST', headers: { 'x-huddle-csrf': S.csrf } }).catch(() => {});
  const res = await fetch('/web/session', { credentials: 'same-origin' }).catch(() => null);
  const s = res && res.ok ? await res.json().catch(() => null) : null;
  if (!s) return lockedFor('signed-out');
  if (!s.locked) return reopen();
  S.csrf = s.csrf; S.unlockWith = s.unlock_with;
  lockedFor(s.unlock_with.passphrase || s.unlock_with.pin ? 'unlockable' : 'no-secret');
}

// What the lock screen says and offers.
function lockedFor(state) {
  const w = S.unlockWith || {};
  $('locked-why').textContent = {
    unlockable: 'It locked to keep patient details private. Messages keep arriving on this device meanwhile.',
    'no-secret': 'It locked to keep patient details private. This device has no passphrase or PIN to unlock it with.',
    'signed-out': 'This screen is signed out: it was locked for too long, signed out, or its node restarted.',
    'link-used': 'That sign-in link was already used or is out of date.',
    'signed-out-now': 'You signed out.',
  }[state];
  const form = $('unlock-form');
  form.hidden = state !== 'unlockable';
  $('signout').hidden = !(state === 'unlockable' || state === 'no-secret');
  $('unlock-label').textContent = w.passphrase && w.pin ? 'Passphrase or PIN' : (w.pin ? 'PIN' : 'Passphrase');
  const link = $('locked-link');
  link.replaceChildren(state === 'unlockable' ? 'Or sign in again: run ' : 'To open it again, run ',
    h('code', {}, 'huddle open'), ' on this computer (or ', h('code', {}, 'huddle open --print'), ' for a sign-in link).');
  if (state === 'no-secret') link.append(' ', h('code', {}, 'huddle pin set'), ' sets a PIN for next time.');
  if (!form.hidden) $('unlock-secret').focus();
}

// A backoff: the Unlock button waits, and says how long.
let waitTimer = null;
function waitThen(ms) {
  const until = Date.now() + ms;
  clearInterval(waitTimer);
  const tick = () => {
    const left = Math.ceil((until - Date.now()) / 1000);
    $('unlock-go').disabled = left > 0;
    $('unlock-wait').textContent = left > 0 ? `Too many wrong tries: wait ${left} s before the next.` : '';
    if (left <= 0) clearInterval(waitTimer);
  };
  tick(); waitTimer = setInterval(tick, 1000);
}

async function unlock(e) {
  e.preventDefault();
  const field = $('unlock-secret');
  if (!field.value || $('unlock-go').disabled) return;
  const body = JSON.stringify({ secret: field.value });
  field.value = '';
  $('unlock-error').textContent = '';
  $('unlock-go').disabled = true;
  let res = null; let data = {};
  try {
    res = await fetch('/web/unlock', { method: 'POST', body, credentials: 'same-origin', headers: { 'x-huddle-csrf': S.csrf, 'content-type': 'application/json' } });
    data = await res.json().catch(() => ({}));
  } catch { /* said below */ }
  $('unlock-go').disabled = false;
  if (res && res.ok) return reopen();
  if (res && res.status === 401) return lockedFor('signed-out');
  if (!res) $('unlock-error').textContent = 'The node did not answer: is huddle still running?';
  else if (res.status === 403) $('unlock-error').textContent = 'Wrong passphrase or PIN.';
  else if (res.status !== 429) $('unlock-error').textContent = data.error || `The node answered ${res.status}.`;
  if (data.retry_after_ms) waitThen(data.retry_after_ms);
  field.focus();
}

// Unlocked: the page as the person left it, read again, live again.
async function reopen() {
  const s = await api('GET', '/web/session');
  S.csrf = s.csrf; S.lockAfter = s.lock_after_ms; S.admin = s.admin;
  S.locked = false; S.lastInput = Date.now();
  $('locked').hidden = true; $('unlock-error').textContent = '';
  const app = $('app');
  app.inert = false; app.removeAttribute('aria-hidden'); app.hidden = false;
  $('body').value = S.draft; S.draft = '';
  attach.renderDraft($('draft'));
  document.title = 'huddle';
  show(S.screen);
  await readAll();
  connect();
  if (S.open && S.screen === 'chats') $('body').focus();
}

async function signout() {
  await fetch('/web/signout', { method: 'POST', headers: { 'x-huddle-csrf': S.csrf } }).catch(() => {});
  lockedFor('signed-out-now');
}

function watchIdle() {
  const seen = () => { S.lastInput = Date.now(); };
  for (const ev of ['keydown', 'pointerdown', 'wheel', 'touchstart']) document.addEventListener(ev, seen, { passive: true, capture: true });
  setInterval(() => {
    if (S.locked) return;
    const now = Date.now();
    if (now - S.lastInput >= S.lockAfter) { lock('idle'); return; }
    // Tell the node a person is here, at most every few seconds.
    if (S.lastInput > S.aliveSent && now - S.aliveSent > Math.min(15000, S.lockAfter / 4)) {
      S.aliveSent = now;
      api('POST', '/web/alive').catch(() => {});
    }
  }, 1000);
}

// ---- start ----

function show(screen) {
  for (const b of document.querySelectorAll('[data-screen]')) b.setAttribute('aria-current', b.dataset.screen === screen ? 'page' : 'false');
  $('screen-chats').hidden = screen !== 'chats';
  $('screen-peers').hidden = screen !== 'peers';
  $('screen-team').hidden = screen !== 'team';
  S.screen = screen;
  if (screen === 'peers') refreshPeers();
  if (screen === 'team') refreshOnCall();
}

async function start() {
  const linkUsed = location.hash === '#link-used';
  if (linkUsed) history.replaceState(null, '', '/');
  $('unlock-form').addEventListener('submit', unlock);
  $('signout').addEventListener('click', signout);
  const res = await fetch('/web/session', { credentials: 'same-origin' }).catch(() => null);
  const session = res && res.ok ? await res.json().catch(() => null) : null;
  if (!session) { lock(linkUsed ? 'link-used' : 'signed-out'); return; }
  S.csrf = session.csrf; S.lockAfter = session.lock_after_ms; S.admin = session.admin;
  for (const b of document.querySelectorAll('[data-screen]')) b.addEventListener('click', () => show(b.dataset.screen));
  $('lock').addEventListener('click', () => lock('idle'));
  $('filter').addEventListener('input', renderChats);
  $('new-conv').addEventListener('click', openNewDialog);
  $('new-cancel').addEventListener('click', () => $('new-dialog').close());
  $('new-form').addEventListener('submit', createConversation);
  for (const r of document.querySelectorAll('input[name=kind]')) r.addEventListener('change', showKind);
  $('composer').addEventListener('submit', send);
  attach.initComposer({
    input: $('attach-input'), camera: $('camera-input'), record: $('record'), dropOn: $('thread'),
    changed: (why) => { attach.renderDraft($('draft')); $('send-error').textContent = why || ''; },
  });
  $('admit-form').addEventListener('submit', admit);
  $('revoke-form').addEventListener('submit', revoke);
  $('revoke-cancel').addEventListener('click', () => $('revoke-dialog').close());
  $('revoke-device-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const d = $('revoke-device').value.trim();
    askRevoke({ device: d }, `device …${d.slice(-8)}`);
  });
  $('body').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); $('composer').requestSubmit(); }
  });
  $('older').addEventListener('click', older);
  $('reply-cancel').addEventListener('click', () => { S.replyTo = null; renderThread(); });
  $('back').addEventListener('click', () => { S.open = null; $('screen-chats').classList.remove('show-thread'); renderChats(); renderThread(); });
  document.addEventListener('visibilitychange', markRead);
  if ('Notification' in window && Notification.permission === 'default') {
    $('notify').hidden = false;
    $('notify').addEventListener('click', async () => { await Notification.requestPermission(); $('notify').hidden = true; });
  }
  watchIdle();
  if (session.locked) {
    await lock('refused');
  } else {
    $('app').hidden = false;
    await readAll();
    connect();
  }
  document.body.dataset.ready = 'true';
  // For profiling and the benchmark (User Timing): the list is interactive.
  performance.mark('huddle:ready');
}

start();
