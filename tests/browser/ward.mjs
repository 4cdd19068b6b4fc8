// The ward's screen in real headless Chromium, against real huddle nodes
// that tests/web_screen.rs started. Exits non-zero with a sentence on the
// first check that fails. Env: ANA_URL, BEN_URL, CARA_URL (one-time
// sign-in links), HUDDLE (the binary), ANA_DIR (for fresh links), CARA_DIR
// and CARA_PASSPHRASE_FILE (her locked node, read by the CLI; the
// passphrase that unlocks her screen), DAN_DIR and DAN_DEVICE (a device to
// admit), SHOTS (where screenshots go).
import { chromium } from 'playwright-core';
import { readFileSync, mkdirSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import http from 'node:http';

const env = (k) => { if (!process.env[k]) throw new Error(`${k} is not set`); return process.env[k]; };
const SHOTS = env('SHOTS');
mkdirSync(SHOTS, { recursive: true });
const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
var T = 20000; // eslint-disable-line no-var -- read before the module body ends
var problems = []; // eslint-disable-line no-var

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic',
    // A fake microphone that needs no permission prompt, for voice notes.
    '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream'],
});
let failed = false;
try {
  await run();
} catch (e) {
  failed = true;
  console.error(`FAILED: ${e.stack || e}`);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);

async function page(url, width = 1280) {
  const ctx = await browser.newContext({ viewport: { width, height: 900 } });
  const p = await ctx.newPage();
  p.on('pageerror', (e) => problems.push(`page error: ${e}`));
  // Console errors fail the run (a CSP violation says "Refused to …"),
  // except the failed loads a locked page and a reset stream cause.
  p.on('console', (m) => {
    if (m.type() === 'error' && !/Failed to load resource|net::ERR_/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  await p.goto(url);
  await p.waitForSelector('body[data-ready=true]', { timeout: T });
  return p;
}

function step(what) { console.log(`- ${what}`); }

async function axe(p, screen) {
  await p.evaluate(axeSource);
  const r = await p.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  const bad = r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  if (bad.length) {
    throw new Error(`axe on ${screen}: ${bad.map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(' ')).slice(0, 3).join('; ')}`).join(' | ')}`);
  }
  step(`axe: no serious or critical violations on ${screen} (${r.violations.length} minor)`);
}

// 1280 px first, then 360 px, which `narrow` readies first (where the
// list and an open conversation are two views).
async function shots(p, name, narrow = async () => {}) {
  for (const width of [1280, 360]) {
    await p.setViewportSize({ width, height: width === 360 ? 780 : 900 });
    if (width === 360) await narrow();
    await p.screenshot({ path: `${SHOTS}/${name}-${width}.png`, fullPage: true });
  }
  await p.setViewportSize({ width: 1280, height: 900 });
}

function conv(p, title) {
  return p.getByRole('navigation', { name: 'Conversations' }).getByRole('button', { name: new RegExp(`^${title}`) });
}
function messages(p) { return p.getByRole('list', { name: 'Messages' }); }

async function create(p, kind, fill) {
  await p.getByRole('button', { name: 'New conversation' }).click();
  await p.getByRole('radio', { name: kind }).check();
  await fill(p.getByRole('dialog'));
  await p.getByRole('button', { name: 'Create' }).click();
  await p.getByRole('dialog').waitFor({ state: 'hidden', timeout: T });
}

async function say(p, text, priority = 'Routine') {
  await p.getByRole('textbox', { name: 'Message' }).fill(text);
  await p.getByRole('combobox', { name: 'Priority' }).selectOption({ label: priority });
  await p.getByRole('textbox', { name: 'Message' }).press('Enter');
  await messages(p).getByRole('listitem').filter({ hasText: text }).filter({ hasNotText: 'Sending' }).waitFor({ timeout: T });
}

async function attachments(ana, ben) {
  step('a photo attached on Ana\'s page shows inline there and on Ben\'s; a large file opens on request; a voice note recorded in the page plays');
  // A 2×2 PNG, with a tEXt chunk that must not leave Ana's device.
  const PNG = Buffer.from('89504e470d0a1a0a0000000d494844520000000200000002080600000072b60d24' +
    '0000001874455874436f6d6d656e740047505320353120312e35303734204e0adb6b46a0000000114944' +
    '4154789c63f8cfc0f01f8419600c0047ca07f967596eb70000000049454e44ae426082', 'hex');
  const item = (p, text) => messages(p).getByRole('listitem').filter({ hasText: text });
  await ana.locator('#attach-input').setInputFiles({ name: 'wound.png', mimeType: 'image/png', buffer: PNG });
  await ana.getByRole('list', { name: 'Files to send' }).getByText(/wound\.png/).waitFor({ timeout: T });
  await ana.getByRole('textbox', { name: 'Message' }).fill('Wound, day 3');
  await ana.getByRole('textbox', { name: 'Message' }).press('Enter');
  await item(ana, 'Wound, day 3').getByRole('img', { name: 'wound.png' }).waitFor({ timeout: T });
  // Small files come to Ben's device unasked, and show inline.
  const shown = item(ben, 'Wound, day 3').getByRole('img', { name: 'wound.png' });
  await shown.waitFor({ timeout: T });
  await ben.waitForFunction((el) => el.complete && el.naturalWidth === 2, await shown.elementHandle(), { timeout: T });
  await item(ana, 'Wound, day 3').getByText('reached another device').waitFor({ timeout: T });
  // What Ben's device received has no text chunk (the location).
  const src = await shown.getAttribute('src');
  const bytes = await ben.evaluate(async (u) => Array.from(new Uint8Array(await (await fetch(u)).arrayBuffer())), src);
  if (Buffer.from(bytes).includes(Buffer.from('GPS 51'))) throw new Error('the photo reached Ben with its location');

  // 3 MiB is over the automatic 2 MiB: Ben opens it.
  const big = Buffer.concat([Buffer.from('%PDF-1.7\n'), Buffer.alloc(3 * 1024 * 1024, 0x20)]);
  await ana.locator('#attach-input').setInputFiles({ name: 'scan.pdf', mimeType: 'application/pdf', buffer: big });
  await ana.getByRole('textbox', { name: 'Message' }).fill('Discharge letter');
  await ana.getByRole('textbox', { name: 'Message' }).press('Enter');
  await item(ana, 'Discharge letter').getByRole('link', { name: /Open scan\.pdf/ }).waitFor({ timeout: T });
  await item(ben, 'Discharge letter').getByRole('button', { name: /Open scan\.pdf/ }).click();
  await item(ben, 'Discharge letter').getByRole('link', { name: /Open scan\.pdf/ }).waitFor({ timeout: T });

  await ana.getByRole('button', { name: 'Record voice note' }).click();
  await ana.getByRole('button', { name: 'Stop recording' }).click();
  await ana.getByRole('list', { name: 'Files to send' }).getByText(/voice-note-/).waitFor({ timeout: T });
  await ana.getByRole('textbox', { name: 'Message' }).fill('Voice note for Ben');
  await ana.getByRole('textbox', { name: 'Message' }).press('Enter');
  const note = item(ben, 'Voice note for Ben').locator('audio');
  await note.waitFor({ timeout: T });
  const status = await ben.evaluate(async (u) => (await fetch(u)).status, await note.getAttribute('src'));
  if (status !== 200) throw new Error(`the voice note answered ${status}`);
  await axe(ben, 'a conversation with attachments');
  await shots(ben, 'attachments');
}

// Cara's node locks its screen after 5 s idle. Locked, her page holds no
// patient text; her node still syncs (a message Ana sends meanwhile reaches
// it, read through its API by the CLI); a wrong passphrase is refused; the
// right one returns her to the conversation she had open, with the message.
async function lockedCara(ana) {
  step('Cara\'s page locks after its idle time (--lock-after 5s), and nothing a patient could be named in stays in the page');
  const cara = await page(env('CARA_URL'));
  await conv(cara, 'Sepsis review').click({ timeout: T });
  await messages(cara).getByRole('listitem').filter({ hasText: 'lactate 4.1' }).waitFor({ timeout: T });
  const heading = cara.getByRole('heading', { name: 'This screen is locked' });
  await heading.waitFor({ timeout: T });
  const field = cara.getByRole('textbox', { name: 'Passphrase' });
  await field.waitFor({ timeout: T });
  const leaks = async () => {
    const html = await cara.evaluate(() => document.documentElement.outerHTML);
    return ['lactate', 'Sepsis review', 'bed 9', 'handover'].filter((t) => html.includes(t));
  };
  const shown = await leaks();
  if (shown.length) throw new Error(`the locked page still holds: ${shown.join(', ')}`);
  if (!(await cara.evaluate(() => document.getElementById('app').inert && document.getElementById('app').hidden))) throw new Error('the page behind the lock is not hidden and inert');
  if (await cara.evaluate(() => document.activeElement.id) !== 'unlock-secret') throw new Error('the passphrase field does not have the focus');
  await axe(cara, 'the locked screen');
  await shots(cara, 'locked');

  step('locked, Cara\'s node keeps syncing: Ana\'s message reaches it, not her page');
  await ana.getByRole('button', { name: 'Conversations' }).click();
  await conv(ana, 'Sepsis review').click();
  await say(ana, 'Sent while Cara was away: bed 12 repeat lactate 2.0');
  const history = () => execFileSync(env('HUDDLE'), ['--data-dir', env('CARA_DIR'), '--json', 'history', 'Sepsis review'], { encoding: 'utf8' });
  const deadline = Date.now() + T;
  while (!history().includes('repeat lactate 2.0')) {
    if (Date.now() > deadline) throw new Error('Cara\'s locked node did not receive Ana\'s message');
    await new Promise((r) => setTimeout(r, 200));
  }
  if ((await leaks()).length) throw new Error('the message reached the locked page');

  step('a wrong passphrase is refused and said so; the right one (Enter) returns to the conversation, with the new message, live again');
  await field.fill('not the passphrase');
  await field.press('Enter');
  await cara.getByRole('alert').filter({ hasText: 'Wrong passphrase or PIN' }).waitFor({ timeout: T });
  await axe(cara, 'the locked screen after a wrong passphrase');
  if (await field.inputValue() !== '') throw new Error('the refused passphrase stays in the field');
  await field.fill(readFileSync(env('CARA_PASSPHRASE_FILE'), 'utf8').replace(/\n$/, ''));
  await field.press('Enter');
  await heading.waitFor({ state: 'hidden', timeout: T });
  await messages(cara).getByRole('listitem').filter({ hasText: 'repeat lactate 2.0' }).waitFor({ timeout: T });
  await say(ana, 'And live again after the unlock');
  await messages(cara).getByRole('listitem').filter({ hasText: 'live again after the unlock' }).waitFor({ timeout: T });
  step('the Lock button locks at once; a reload keeps the session locked');
  await cara.getByRole('button', { name: 'Lock', exact: true }).click();
  await heading.waitFor({ timeout: T });
  if ((await leaks()).length) throw new Error('the page locked by its button still holds patient text');
  await cara.reload();
  await field.waitFor({ timeout: T });
  if ((await leaks()).length) throw new Error('the reloaded locked page holds patient text');
  await ana.getByRole('button', { name: 'Team' }).click();
}

async function run() {
  const ana = await page(env('ANA_URL'));
  const ben = await page(env('BEN_URL'));

  step('a used sign-in link signs nobody in');
  const again = await (await browser.newContext()).newPage();
  await again.goto(env('ANA_URL'));
  await again.getByRole('heading', { name: 'This screen is locked' }).waitFor({ timeout: T });
  await again.getByText('already used').waitFor({ timeout: T });

  step('a 1:1, created on Ana\'s page, appears on Ben\'s without reloading');
  await create(ana, '1:1', async (d) => d.getByRole('combobox', { name: 'With' }).selectOption({ label: 'Ben Okafor' }));
  await say(ana, 'Bed 4 obs stable, can you review at 10?');
  await conv(ben, 'Ana Silva').click({ timeout: T });
  await messages(ben).getByRole('listitem').filter({ hasText: 'Bed 4 obs stable' }).waitFor({ timeout: T });

  step('Ben answers (Shift+Enter breaks the line); Ana sees it live');
  await ben.getByRole('textbox', { name: 'Message' }).fill('On my way');
  await ben.getByRole('textbox', { name: 'Message' }).press('Shift+Enter');
  await ben.getByRole('textbox', { name: 'Message' }).type('10 minutes');
  await ben.getByRole('textbox', { name: 'Message' }).press('Enter');
  await messages(ana).getByRole('listitem').filter({ hasText: 'On my way\n10 minutes' }).waitFor({ timeout: T });

  step('a group with Ben and Cara; an urgent message acknowledged on Ben\'s page shows acknowledged on Ana\'s');
  await create(ana, 'Group', async (d) => {
    await d.getByRole('textbox', { name: 'Title' }).fill('Sepsis review');
    await d.getByRole('checkbox', { name: 'Ben Okafor' }).check();
    await d.getByRole('checkbox', { name: 'Cara Jones' }).check();
  });
  await say(ana, 'Bed 12 lactate 4.1, please come now', 'Urgent');
  await say(ana, 'Routine: handover at 19:00');
  const urgentOnBen = messages(ben).getByRole('listitem').filter({ hasText: 'lactate 4.1' });
  await conv(ben, 'Sepsis review').click({ timeout: T });
  await urgentOnBen.waitFor({ timeout: T });
  if (!(await urgentOnBen.getByText('URGENT').isVisible())) throw new Error('the urgent message is not labelled URGENT');
  await axe(ben, 'a conversation with an urgent message awaiting acknowledgement');
  await shots(ben, 'conversation-urgent');
  await urgentOnBen.getByRole('button', { name: 'Acknowledge' }).click();
  await messages(ana).getByRole('listitem').filter({ hasText: 'lactate 4.1' }).getByText(/acknowledged by Ben Okafor/).waitFor({ timeout: T });
  await ana.getByText(/delivered 2\/2|delivered 1\/2/).first().waitFor({ timeout: T });

  step('the conversation list, with unread and urgent badges');
  await say(ana, 'Second urgent: bed 9 BP 80/40', 'STAT');
  await conv(ben, 'Ana Silva').click();
  await conv(ben, 'Sepsis review').getByText(/STAT 1/).waitFor({ timeout: T });
  step('what waits for Ben: the STAT in the banner, acknowledged from there');
  const waiting = ben.getByRole('region', { name: 'Waiting for you' }).getByRole('listitem').filter({ hasText: 'bed 9 BP 80/40' });
  await waiting.waitFor({ timeout: T });
  if (!(await waiting.getByText('STAT', { exact: true }).isVisible())) throw new Error('the banner does not label the message STAT');
  await axe(ben, 'the banner of what waits');
  await waiting.getByRole('button', { name: 'Acknowledge' }).click();
  await waiting.waitFor({ state: 'detached', timeout: T });
  await conv(ana, 'Sepsis review').click();
  await messages(ana).getByRole('listitem').filter({ hasText: 'bed 9 BP 80/40' }).getByText(/acknowledged by Ben Okafor/).waitFor({ timeout: T });
  await axe(ben, 'the conversation list');
  await shots(ben, 'conversations', () => ben.getByRole('button', { name: 'Back to conversations' }).click());

  // Resetting another process's TCP connections (ss -K) takes root, which
  // CI has; elsewhere this one check is skipped, and says so.
  if (process.getuid && process.getuid() === 0) {
    step('a lost event stream recovers: messages sent while it was down appear');
    // Reset every TCP connection to Ben's node (the event stream among
    // them), as a flaky link or a sleeping laptop would.
    execFileSync('ss', ['-K', 'dst', '127.0.0.1', 'dport', '=', new URL(env('BEN_URL')).port], { stdio: 'pipe' });
    await ben.getByText('Live updates lost').waitFor({ timeout: T });
    await conv(ana, 'Ben Okafor').click();
    await say(ana, 'Sent while your screen was offline');
    await conv(ben, 'Ana Silva').click({ timeout: T });
    await messages(ben).getByRole('listitem').filter({ hasText: 'Sent while your screen was offline' }).waitFor({ timeout: T });
    await ben.getByText(/connected to \d+ of \d+ team devices/).waitFor({ timeout: T });
  } else if (process.env.CI === 'true') {
    throw new Error('the lost-stream check needs root (ss -K), which CI has');
  } else {
    step('SKIPPED the lost-stream check: resetting connections (ss -K) needs root');
  }

  step('the peers and team screens');
  await ana.getByRole('button', { name: 'Peers' }).click();
  await ana.getByRole('cell', { name: /Ben Okafor/ }).waitFor({ timeout: T });
  await axe(ana, 'peers');
  await shots(ana, 'peers');
  step('a reminder set from the composer shows on the message');
  await ana.getByRole('button', { name: 'Conversations' }).click();
  await conv(ana, 'Sepsis review').click();
  await ana.getByRole('textbox', { name: 'Message' }).fill('Recheck lactate in bed 12');
  await ana.getByRole('combobox', { name: 'Remind me' }).selectOption({ label: 'In 1 h' });
  await ana.getByRole('textbox', { name: 'Message' }).press('Enter');
  await messages(ana).getByRole('listitem').filter({ hasText: 'Recheck lactate' }).getByText(/Reminder for you at/).waitFor({ timeout: T });
  await conv(ben, 'Sepsis review').click();
  await messages(ben).getByRole('listitem').filter({ hasText: 'Recheck lactate' }).getByText(/Reminder for Ana Silva at/).waitFor({ timeout: T });
  await attachments(ana, ben);
  await ana.getByRole('button', { name: 'Team' }).click();
  await ana.getByRole('img', { name: /QR code/ }).waitFor({ timeout: T });
  await ana.getByRole('table', { name: /Who is on call now/ }).getByRole('cell', { name: '#charge-nurse' }).waitFor({ timeout: T });
  await axe(ana, 'team');
  await shots(ana, 'team');

  await lockedCara(ana);

  step('Ana admits Dan\'s device from her Team page, confirmed with a fresh link; Dan joins with the token');
  const fresh = () => execFileSync(env('HUDDLE'), ['--data-dir', env('ANA_DIR'), 'open', '--print'], { encoding: 'utf8' }).trim();
  await ana.getByRole('textbox', { name: /^Device id \(the device/ }).fill(env('DAN_DEVICE'));
  await ana.getByRole('textbox', { name: 'Name' }).fill('Dan Reyes');
  await ana.getByRole('textbox', { name: /^Roles/ }).fill('physician, on-call');
  await ana.getByRole('textbox', { name: 'Confirm with a fresh sign-in link' }).fill('http://127.0.0.1:1/login?t=not-a-token');
  await ana.getByRole('button', { name: 'Admit' }).click();
  await ana.getByText(/confirm with a fresh sign-in link/).waitFor({ timeout: T });
  await ana.getByRole('textbox', { name: 'Confirm with a fresh sign-in link' }).fill(fresh());
  await ana.getByRole('button', { name: 'Admit' }).click();
  const token = ana.getByRole('textbox', { name: /^Admission token/ });
  await ana.getByText(/Admitted Dan Reyes/).waitFor({ timeout: T });
  await ana.getByRole('img', { name: 'QR code of the admission token' }).waitFor({ timeout: T });
  execFileSync(env('HUDDLE'), ['--data-dir', env('DAN_DIR'), 'team', 'join', await token.inputValue()], { stdio: 'pipe' });
  // A lost device is revoked alone, so its owner can be admitted again on
  // a new one under the same member.
  await ana.getByRole('list', { name: "Ben Okafor's devices" })
    .getByRole('button', { name: /^Revoke device …\w{8} of Ben Okafor/ }).waitFor({ timeout: T });
  await axe(ana, 'team, as its administrator, with an admission token');
  await shots(ana, 'team-admin');

  step('Ana revokes Cara from her Team page (confirmed again); it shows on her page and reaches Ben\'s');
  await ana.getByRole('button', { name: 'Revoke Cara Jones…' }).click();
  await ana.getByRole('dialog').getByRole('textbox').fill(fresh());
  await ana.getByRole('dialog').getByRole('button', { name: 'Revoke' }).click();
  await ana.getByRole('listitem').filter({ hasText: 'Cara Jones' }).getByText('REVOKED').waitFor({ timeout: T });
  await ben.getByRole('button', { name: 'Team' }).click();
  await ben.getByRole('listitem').filter({ hasText: 'Cara Jones' }).getByText('REVOKED').waitFor({ timeout: T });
  if (await ben.getByRole('button', { name: 'Admit' }).isVisible()) throw new Error('Ben holds no team key, yet his page offers to admit');

  step('a request naming a foreign Host is refused');
  const u = new URL(env('ANA_URL'));
  const status = await new Promise((resolve, reject) => {
    http.get({ host: u.hostname, port: u.port, path: '/', headers: { Host: `evil.example:${u.port}` } }, (res) => { res.resume(); resolve(res.statusCode); }).on('error', reject);
  });
  if (status !== 403) throw new Error(`a foreign Host got ${status}, not 403`);

  step('keyboard only: Tab reaches "New conversation", Enter opens it, Escape closes it, focus is visible');
  await ana.getByRole('button', { name: 'Conversations' }).click();
  await ana.getByRole('searchbox', { name: 'Filter' }).focus();
  await ana.keyboard.press('Tab');
  const focused = await ana.evaluate(() => {
    const el = document.activeElement;
    return { name: el.textContent, outline: getComputedStyle(el).outlineStyle };
  });
  if (focused.name !== 'New conversation') throw new Error(`Tab from the filter reached "${focused.name}"`);
  if (focused.outline === 'none') throw new Error('the focused button shows no outline');
  await ana.keyboard.press('Enter');
  await ana.getByRole('dialog', { name: 'New conversation' }).waitFor({ timeout: T });
  await ana.keyboard.press('Escape');
  await ana.getByRole('dialog').waitFor({ state: 'hidden', timeout: T });

  step('the new-conversation dialog');
  await ana.getByRole('button', { name: 'Conversations' }).click();
  await ana.getByRole('button', { name: 'New conversation' }).click();
  await axe(ana, 'the new-conversation dialog');
  await shots(ana, 'new-conversation');
  if (problems.length) throw new Error(`the pages reported errors: ${problems.join(' | ')}`);
  console.log('all browser checks passed');
}
