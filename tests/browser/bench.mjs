// The screen's benchmark (benches/e2e/screen.rs starts the nodes): time
// from opening a sign-in URL to an interactive conversation list, time to
// open the conversation, and send in Ana's page → rendered in Ben's page.
// Env: ANA_API, ANA_TOKEN, BEN_API, BEN_TOKEN, SENDS, OPENS, CHROMIUM.
// Prints one line `SCREEN {json}` with every sample in milliseconds.
import { chromium } from 'playwright-core';
import { performance } from 'node:perf_hooks';

const env = (k) => { if (!process.env[k]) throw new Error(`${k} is not set`); return process.env[k]; };
const SENDS = Number(env('SENDS'));
const OPENS = Number(env('OPENS'));
const T = 120000;
const epoch = () => performance.timeOrigin + performance.now();

async function loginUrl(api, token) {
  const r = await fetch(`${api}/web/login`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
  if (!r.ok) throw new Error(`login URL: ${r.status}`);
  return (await r.json()).url;
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
});
try {
  const open = []; const conversation = [];
  for (let i = 0; i < OPENS; i++) {
    const url = await loginUrl(env('ANA_API'), env('ANA_TOKEN'));
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const p = await ctx.newPage();
    const t0 = epoch();
    await p.goto(url);
    await p.waitForSelector('body[data-ready=true]', { timeout: T });
    const ready = await p.evaluate(() => performance.timeOrigin + performance.getEntriesByName('huddle:ready')[0].startTime);
    open.push(ready - t0);
    const t1 = await p.evaluate(() => {
      const t = performance.timeOrigin + performance.now();
      document.querySelector('#conv-list button').click();
      return t;
    });
    await p.waitForSelector('#messages li', { timeout: T });
    const shown = await p.evaluate(() => new Promise((r) => requestAnimationFrame(() => r(performance.timeOrigin + performance.now()))));
    conversation.push(shown - t1);
    await ctx.close();
  }

  const page = async (api, token) => {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const p = await ctx.newPage();
    await p.goto(await loginUrl(api, token));
    await p.waitForSelector('body[data-ready=true]', { timeout: T });
    await p.click('#conv-list button');
    await p.waitForSelector('#messages li', { timeout: T });
    return p;
  };
  // Ben's node's own event stream, read here: when each message reaches
  // the node (the part of the latency before the page).
  const arrived = [];
  const stop = new AbortController();
  const sse = await fetch(`${env('BEN_API')}/v1/events`, {
    headers: { authorization: `Bearer ${env('BEN_TOKEN')}` }, signal: stop.signal,
  });
  (async () => {
    const dec = new TextDecoder(); let buf = '';
    for await (const chunk of sse.body) {
      buf += dec.decode(chunk, { stream: true });
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const ev = buf.slice(0, i); buf = buf.slice(i + 2);
        if (ev.includes('event: message_added') && ev.includes('"local":false')) arrived.push(epoch());
      }
    }
  })().catch(() => {});
  const ana = await page(env('ANA_API'), env('ANA_TOKEN'));
  const ben = await page(env('BEN_API'), env('BEN_TOKEN'));
  // Ben's page notes when each benchmark message is first in its list, at
  // the next animation frame (when it is painted).
  await ben.evaluate(() => {
    window.benchSeen = new Map();
    const list = document.getElementById('messages');
    new MutationObserver(() => {
      for (const b of list.querySelectorAll('.msg-body')) {
        const text = b.textContent;
        if (text.startsWith('bench ') && !window.benchSeen.has(text)) {
          window.benchSeen.set(text, 0);
          requestAnimationFrame(() => window.benchSeen.set(text, performance.timeOrigin + performance.now()));
        }
      }
    }).observe(list, { childList: true, subtree: true });
  });
  const node = [];
  const send = async (text) => {
    const before = arrived.length;
    const t0 = await ana.evaluate((body) => {
      document.getElementById('body').value = body;
      const t = performance.timeOrigin + performance.now();
      document.getElementById('composer').requestSubmit();
      return t;
    }, text);
    await ben.waitForFunction((body) => (window.benchSeen.get(body) || 0) > 0, text, { timeout: T, polling: 5 });
    const t1 = await ben.evaluate((body) => window.benchSeen.get(body), text);
    // The next send waits until Ana's page has it durable (not pending).
    await ana.waitForFunction(() => !document.querySelector('#messages li.pending'), null, { timeout: T, polling: 5 });
    if (arrived.length > before) node.push(arrived[before] - t0);
    return t1 - t0;
  };
  for (let i = 0; i < 5; i++) await send(`bench warm-up ${i}`);
  node.length = 0;
  const render = [];
  for (let i = 0; i < SENDS; i++) render.push(await send(`bench ${i}`));
  console.log(`SCREEN ${JSON.stringify({ open, conversation, render, node })}`);
  stop.abort();
} finally {
  await browser.close();
}
