// Rendering: pure functions from the API's JSON to DOM nodes. Text from
// peers is only ever set as text (never as HTML).

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

export function time(ms) {
  if (!ms) return '';
  const d = new Date(ms);
  const now = new Date();
  const hm = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  if (d.toDateString() === now.toDateString()) return hm;
  return `${d.toLocaleDateString([], { day: 'numeric', month: 'short' })} ${hm}`;
}

const LABEL = { urgent: 'URGENT', stat: 'STAT' };

export function priorityBadge(p) {
  return LABEL[p] ? h('span', { class: `badge ${p}` }, LABEL[p]) : null;
}

export function nameOf(dir, member) {
  const m = dir.get(member);
  return m ? m.name : `member ${member.slice(0, 8)}`;
}

export function conversationItem(c, current, onOpen) {
  const badges = [];
  if (c.stat_to_ack > 0) badges.push(h('span', { class: 'badge stat' }, `STAT ${c.stat_to_ack}`));
  if (c.to_ack - c.stat_to_ack > 0) {
    badges.push(h('span', { class: 'badge urgent' }, `URGENT ${c.to_ack - c.stat_to_ack}`));
  }
  if (c.unread > 0) {
    badges.push(h('span', { class: 'badge unread' }, `${c.unread >= 1000 ? '1000+' : c.unread} unread`));
  }
  const last = c.last
    ? [priorityBadge(c.last.priority), ' ', c.last.author_name ? `${c.last.author_name}: ` : '', c.last.preview]
    : [c.messages === 0 ? 'No messages yet' : `${c.messages} messages`];
  const kind = c.kind === 'role' ? 'role channel' : c.kind === 'group' ? 'group' : '1:1';
  return h('li', {},
    h('button', {
      type: 'button', 'aria-current': current ? 'true' : null,
      'data-conversation': c.id, onclick: () => onOpen(c.id),
    },
    h('div', { class: 'conv-top' },
      h('span', { class: 'conv-title' }, c.title),
      h('span', { class: 'conv-time' }, time(c.last ? c.last.time_ms : c.last_activity))),
    h('div', { class: 'conv-top' },
      h('span', { class: 'conv-last' }, ...last),
      h('span', { class: 'visually-hidden' }, `, ${kind}`),
      ...badges)));
}

// Whose receipts a message is counted against: the conversation's members
// other than its author (a role channel's are everyone holding the role).
export function audience(conv, dir, author) {
  let members = conv.members;
  if (conv.kind === 'role') {
    members = [...dir.values()].filter((m) => !m.revoked && m.roles.includes(conv.role)).map((m) => m.member);
  }
  return members.filter((m) => m !== author);
}

export function messageItem(m, ctx) {
  const { me, dir, conv, byId, onAck, onReply } = ctx;
  const mine = m.author === me;
  const who = m.author_name || nameOf(dir, m.author);
  const author = dir.get(m.author);
  const role = author && author.roles.length ? author.roles.join(', ') : null;
  const cls = ['msg', m.priority !== 'routine' ? m.priority : '', mine ? 'mine' : '', m.pending ? 'pending' : ''];
  const head = h('div', { class: 'msg-head' },
    priorityBadge(m.priority),
    m.escalation ? h('span', { class: 'badge escalation' }, `ESCALATION ${m.escalation.level}`) : null,
    h('span', { class: 'author' }, who),
    role ? h('span', {}, role) : null,
    m.author_verified === false ? h('span', { class: 'revoked' }, 'unverified author') : null,
    h('time', { datetime: new Date(m.time_ms).toISOString() }, time(m.time_ms)));
  let quote = null;
  if (m.reply_to) {
    const q = byId.get(m.reply_to);
    quote = h('p', { class: 'quote' }, q
      ? `${q.author_name || nameOf(dir, q.author)}: ${q.body.slice(0, 200)}`
      : 'In reply to an earlier message');
  }
  const actions = [];
  const wantsAck = m.priority !== 'routine';
  if (wantsAck && !mine && !m.pending && !m.acked_by.includes(me)) {
    actions.push(h('button', { type: 'button', class: 'ack', onclick: () => onAck(m) }, 'Acknowledge'));
  }
  if (!m.pending) {
    actions.push(h('button', {
      type: 'button', 'aria-label': `Reply to ${who}`, onclick: () => onReply(m),
    }, 'Reply'));
  }
  let note = null;
  if (m.reminder) {
    const r = m.reminder;
    const whom = r.targets.map((t) => (t === me ? 'you' : nameOf(dir, t))).join(', ');
    const repeat = r.times > 1 ? `, then every ${Math.round(r.every_ms / 60000)} min, ${r.times} times in all` : '';
    note = h('p', { class: 'note' }, `Reminder for ${whom} at ${time(r.due_ms)}${repeat}`);
  }
  return h('li', { class: cls.filter(Boolean).join(' '), 'data-message': m.id || '' },
    head, quote,
    m.body ? h('p', { class: 'msg-body' }, m.body) : null, note,
    ctx.attachments ? ctx.attachments(m) : null,
    receipts(m, conv, dir, me),
    actions.length ? h('div', { class: 'msg-actions' }, actions) : null);
}

function receipts(m, conv, dir, me) {
  if (m.pending) return h('p', { class: 'receipts' }, m.failed ? `Not sent: ${m.failed}` : 'Sending… (not yet stored on this device)');
  const aud = audience(conv, dir, m.author);
  const parts = [];
  if (aud.length) {
    const got = aud.filter((a) => m.delivered_to.includes(a)).length;
    const read = aud.filter((a) => m.read_by.includes(a)).length;
    parts.push(`delivered ${got}/${aud.length} · read ${read}/${aud.length}`);
  }
  const out = [h('span', {}, parts.join(''))];
  if (m.priority !== 'routine') {
    if (m.acked_by.length) {
      const names = m.acked_by.map((a) => (a === me ? 'you' : nameOf(dir, a)));
      out.push(h('span', { class: 'acked' }, ` · acknowledged by ${names.join(', ')}`));
    } else {
      out.push(h('span', {}, ' · not acknowledged yet'));
    }
  }
  const missing = aud.filter((a) => !m.delivered_to.includes(a)).map((a) => nameOf(dir, a));
  if (missing.length && missing.length <= 5) out.push(h('span', {}, ` · not yet on ${missing.join(', ')}'s devices`));
  return h('p', { class: 'receipts' }, out);
}

export function peerRow(p, dir) {
  return h('tr', {},
    h('td', {}, p.name || (p.member ? nameOf(dir, p.member) : 'unknown device'), p.verified ? '' : ' (not verified)'),
    h('td', {}, h('code', {}, `…${p.device.slice(-8)}`)),
    h('td', { class: 'addr' }, p.address ? `yes, ${p.address}` : 'no'),
    h('td', {}, p.found_by || ''),
    h('td', {}, p.since_ms ? time(p.since_ms) : ''));
}

// A member, their devices, and (on the device holding the team key) the
// buttons that revoke the member or one of their devices.
export function memberItem(m, me, onRevoke) {
  const mine = m.member === me.member;
  const canRevoke = onRevoke && !m.revoked;
  const devices = m.devices.map((d) => h('li', {},
    h('code', {}, `…${d.slice(-8)}`), d === me.device ? ' (this device)' : '',
    canRevoke && d !== me.device
      ? h('button', {
        type: 'button', 'aria-label': `Revoke device …${d.slice(-8)} of ${m.name}…`,
        onclick: () => onRevoke({ device: d }, `${m.name}'s device …${d.slice(-8)}`),
      }, 'Revoke device…')
      : null));
  return h('li', {},
    h('div', { class: 'member' },
      h('span', {},
        h('strong', {}, m.name), mine ? ' (you)' : '',
        m.roles.length ? ` · ${m.roles.join(', ')}` : '',
        m.revoked ? h('span', { class: 'revoked' }, ' · REVOKED') : ''),
      canRevoke && !mine
        ? h('button', {
          type: 'button', 'aria-label': `Revoke ${m.name}…`,
          onclick: () => onRevoke({ member: m.member }, `${m.name}, every device`),
        }, 'Revoke…')
        : null),
    h('ul', { class: 'devices', 'aria-label': `${m.name}'s devices` }, devices));
}
