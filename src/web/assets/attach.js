// Attachments on the screen: files picked with the button, dropped on the
// conversation or taken with the camera, voice notes recorded in the page;
// uploading them (with a small thumbnail for photos) before the message;
// and what a message carries, shown inline when this device holds it.
import { h } from './views.js';

const THUMB_MAX = 3072;
const MAX_FILES = 4;

export const draft = [];
let onChange = () => {};
let recorder = null;

export function size(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1048576) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1048576).toFixed(1)} MiB`;
}

function add(files) {
  for (const f of files) {
    if (draft.length >= MAX_FILES) { onChange(`A message carries at most ${MAX_FILES} files.`); return; }
    draft.push({ blob: f, name: f.name || 'attachment', type: f.type || '' });
  }
  onChange();
}

// The media type without parameters ("audio/webm;codecs=opus" → "audio/webm").
function bare(type) { return (type || '').split(';')[0].trim().toLowerCase(); }

export function renderDraft(el) {
  el.replaceChildren(...draft.map((d, i) => h('li', {},
    `${d.name} (${size(d.blob.size)})`,
    h('button', { type: 'button', 'aria-label': `Remove ${d.name}`, onclick: () => { draft.splice(i, 1); onChange(); } }, 'Remove'))));
  el.hidden = draft.length === 0;
}

export function initComposer({ input, camera, record, dropOn, changed }) {
  onChange = changed;
  input.addEventListener('change', () => { add(input.files); input.value = ''; });
  camera.addEventListener('change', () => { add(camera.files); camera.value = ''; });
  dropOn.addEventListener('dragover', (e) => { if (e.dataTransfer && [...e.dataTransfer.types].includes('Files')) { e.preventDefault(); dropOn.classList.add('dropping'); } });
  dropOn.addEventListener('dragleave', () => dropOn.classList.remove('dropping'));
  dropOn.addEventListener('drop', (e) => {
    dropOn.classList.remove('dropping');
    if (e.dataTransfer && e.dataTransfer.files.length) { e.preventDefault(); add(e.dataTransfer.files); }
  });
  if (!navigator.mediaDevices || !window.MediaRecorder) { record.hidden = true; return; }
  record.addEventListener('click', () => toggleRecording(record));
}

async function toggleRecording(button) {
  if (recorder) { recorder.stop(); return; }
  let stream;
  try { stream = await navigator.mediaDevices.getUserMedia({ audio: true }); } catch (e) {
    onChange(`The microphone is not available: ${e.message}`);
    return;
  }
  const parts = [];
  recorder = new MediaRecorder(stream);
  recorder.ondataavailable = (e) => { if (e.data.size) parts.push(e.data); };
  recorder.onstop = () => {
    for (const t of stream.getTracks()) t.stop();
    const type = bare(recorder.mimeType) || 'audio/webm';
    const ext = type.split('/')[1] || 'webm';
    const at = new Date().toTimeString().slice(0, 5).replace(':', '');
    recorder = null;
    button.textContent = 'Record voice note'; button.setAttribute('aria-pressed', 'false');
    add([new File(parts, `voice-note-${at}.${ext}`, { type })]);
  };
  recorder.start();
  button.textContent = 'Stop recording'; button.setAttribute('aria-pressed', 'true');
}

// A JPEG of at most THUMB_MAX bytes, hex, for a photo; null otherwise.
async function thumbnail(blob) {
  if (!bare(blob.type).startsWith('image/') || !window.createImageBitmap) return null;
  try {
    const img = await createImageBitmap(blob);
    for (const [edge, q] of [[96, 0.7], [64, 0.5], [48, 0.4]]) {
      const k = Math.min(1, edge / Math.max(img.width, img.height));
      const c = document.createElement('canvas');
      c.width = Math.max(1, Math.round(img.width * k)); c.height = Math.max(1, Math.round(img.height * k));
      c.getContext('2d').drawImage(img, 0, 0, c.width, c.height);
      const out = await new Promise((ok) => c.toBlob(ok, 'image/jpeg', q));
      if (out && out.size <= THUMB_MAX) {
        const b = new Uint8Array(await out.arrayBuffer());
        return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
      }
    }
  } catch { /* not an image the browser reads: no thumbnail */ }
  return null;
}

// Uploads `files` (taken from the draft); returns what the message attaches.
export async function upload(csrf, files) {
  const out = [];
  for (const d of files) {
    const type = bare(d.type);
    const q = new URLSearchParams({ name: d.name });
    if (type) q.set('type', type);
    const res = await fetch(`/v1/blobs?${q}`, {
      method: 'POST', body: d.blob, credentials: 'same-origin',
      headers: { 'x-huddle-csrf': csrf, 'content-type': 'application/octet-stream' },
    });
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(`${d.name}: ${data.error || `the node answered ${res.status}`}`);
    const a = { hash: data.hash, name: data.name, media_type: data.media_type };
    const t = a.media_type.startsWith('image/') ? await thumbnail(d.blob) : null;
    if (t) a.thumbnail = t;
    out.push(a);
  }
  return out;
}

const INLINE_IMAGE = ['image/jpeg', 'image/png', 'image/webp', 'image/gif'];

// What a message carries, shown as this device holds it.
export function attachmentList(m, conv, { fetching, onFetch }) {
  if (!m.attachments || !m.attachments.length) return null;
  return h('ul', { class: 'attachments' }, m.attachments.map((a) => {
    const url = `/v1/conversations/${conv}/messages/${m.id}/attachments/${a.index}`;
    const label = `${a.name} (${size(a.size)})`;
    const parts = [];
    const busy = fetching.has(`${m.id}/${a.index}`);
    if (a.held && INLINE_IMAGE.includes(a.media_type)) {
      parts.push(h('a', { href: url, target: '_blank', rel: 'noopener' }, h('img', { src: url, alt: a.name, class: 'attached-image', loading: 'lazy' })));
    } else if (a.held && a.media_type.startsWith('audio/')) {
      parts.push(h('audio', { controls: true, src: url, preload: 'metadata', 'aria-label': a.name }));
    } else if (a.held && a.media_type.startsWith('video/')) {
      parts.push(h('video', { controls: true, src: url, preload: 'metadata', class: 'attached-image', 'aria-label': a.name }));
    } else if (!a.held && a.thumbnail) {
      parts.push(h('img', { src: `${url}/thumbnail`, alt: `${a.name} (preview)`, class: 'thumb' }));
    }
    if (a.held) {
      const pdf = a.media_type === 'application/pdf';
      parts.push(h('a', { href: url, target: pdf ? '_blank' : undefined, rel: 'noopener', download: pdf ? undefined : a.name }, pdf ? `Open ${label}` : `Save ${label}`));
    } else {
      parts.push(h('button', { type: 'button', disabled: busy, onclick: () => onFetch(m, a) },
        busy ? `Fetching ${label}…` : `Open ${label}`));
    }
    if (a.own) parts.push(h('span', { class: 'reach' }, a.reached ? 'reached another device' : 'not on any other device yet'));
    return h('li', {}, ...parts);
  }));
}
