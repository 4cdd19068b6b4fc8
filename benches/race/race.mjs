// The peer race of issue 6: automerge-repo on the same latency and catch-up
// workloads as benches/e2e.rs, modelled the same way (one document per
// conversation, a list of small message records, one change per message).
// Every socket is on 127.0.0.1. Prints human lines and `RESULT {json}` lines
// with "impl": "automerge-repo"; benches/run.sh runs this after the huddle
// bench and prints both side by side (benches/race/table.mjs).
//
//   node race.mjs [--tiny] [--runs N] [--only latency,catchup] [--catchup 10000,100000]
//
// What differs from huddle (see BENCHMARKS.md): no signatures, plain
// WebSocket instead of Noise over TCP, storage saved asynchronously (a change
// is not durable when `change` returns), all repos in one Node.js thread.

import { Repo } from "@automerge/automerge-repo";
import { WebSocketClientAdapter, WebSocketServerAdapter } from "@automerge/automerge-repo-network-websocket";
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs";
import * as A from "@automerge/automerge";
import { WebSocketServer } from "ws";
import net from "node:net";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";

const args = process.argv.slice(2);
const tiny = args.includes("--tiny") || (process.env.HUDDLE_E2E_TINY ?? "0") !== "0";
const opt = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const runs = Number(opt("--runs") ?? (tiny ? 1 : 3));
const only = opt("--only")?.split(",");
const wants = (p) => !only || only.includes(p);
const catchupSizes = (opt("--catchup") ?? (tiny ? "500" : "10000,100000")).split(",").map(Number);

// Bound the whole script in time: it stops by itself whatever happens.
const LIMIT_MS = Number(opt("--limit-secs") ?? (tiny ? 120 : 1800)) * 1000;
setTimeout(() => {
  console.error(`race: stopping after ${LIMIT_MS / 1000}s (the time limit)`);
  process.exit(2);
}, LIMIT_MS).unref();

// Closing a mesh resets the sockets of the client adapters, which rethrow
// it from an event handler: expected at shutdown, not a failure.
process.on("uncaughtException", (e) => {
  if (e?.code === "ECONNRESET" || e?.code === "EPIPE") return;
  console.error(e);
  process.exit(1);
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const result = (v) => console.log("RESULT " + JSON.stringify({ impl: "automerge-repo", ...v }));
const pct = (v, q) => (v.length ? v[Math.min(v.length, Math.max(1, Math.ceil(q * v.length))) - 1] : NaN);
const median = (v) => pct([...v].sort((a, b) => a - b), 0.5);
const spread = (v) => `${Math.min(...v).toFixed(1)}–${Math.max(...v).toFixed(1)}`;
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), "huddle-race-"));

async function waitFor(what, ms, check) {
  if (process.env.RACE_DEBUG) console.error(`waiting for ${what}`);
  const end = performance.now() + ms;
  while (performance.now() < end) {
    if (await check()) return true;
    await sleep(2);
  }
  console.error(`warning: gave up after ${ms} ms waiting for ${what}`);
  return false;
}

// The 60-byte bodies of benches/e2e.rs.
const WORDS = "bed 12 bp 90/60 hr 118 started fluids please review asap labs back k+ 5.9 repeat ecg pain score 7 gave morphine 2mg iv sats 94% on 2l family asking for update obs stable wound dressing changed npo after midnight theatre at 9 bay 4 falls risk high ok thanks will do now".split(" ");
const M64 = (1n << 64n) - 1n;
function body(i) {
  let x = ((BigInt(i) * 0x9e3779b97f4a7c15n) & M64) ^ 0xd1b54a32d192ed03n;
  let s = "";
  while (s.length < 60) {
    x ^= x >> 33n;
    x = (x * 0xff51afd7ed558ccdn) & M64;
    x ^= x >> 29n;
    if (s) s += " ";
    s += WORDS[Number(x % BigInt(WORDS.length))];
  }
  s = s.slice(0, 60);
  if (s.endsWith(" ")) s = s.slice(0, 59) + ".";
  return s;
}

let msgSeq = 0;
// A message record as huddle stores it, less the signature and device.
function record(author, i) {
  return { id: `${author}-${msgSeq++}`, author, hlc: Date.now(), priority: "routine", body: body(i) };
}

async function wsServer() {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((r) => wss.once("listening", r));
  return wss;
}

// A repo with its own storage dir, a server socket if `serve` (repo 2.5
// waits for every adapter to be ready before `find` resolves, and a server
// adapter nobody connects to never is), and clients to `dial`.
async function startRepo(name, dir, dial, serve = true) {
  const wss = serve ? await wsServer() : null;
  const network = [...(serve ? [new WebSocketServerAdapter(wss)] : []), ...dial.map((p) => new WebSocketClientAdapter(`ws://127.0.0.1:${p}`))];
  const repo = new Repo({ network, storage: new NodeFSStorageAdapter(dir), peerId: name, sharePolicy: async () => true });
  return { repo, wss, port: wss?.address().port, name };
}

async function stopRepo(r) {
  await r.repo.shutdown().catch(() => {});
  if (!r.wss) return;
  for (const c of r.wss.clients) c.terminate();
  await new Promise((res) => r.wss.close(() => res()));
}

// ---------------------------------------------------------------- latency

async function latencyOnce(repos, rate, count) {
  const h0 = repos[0].repo.create({ messages: [] });
  const handles = [h0];
  for (const r of repos.slice(1)) {
    // A backlogged mesh may answer "unavailable": retry a few times.
    let h = null;
    for (let i = 0; i < 10 && !h; i++) h = await r.repo.find(h0.url).catch(() => sleep(500).then(() => null));
    if (!h) return null;
    handles.push(h);
  }
  const arrivals = repos.map(() => []);
  const listeners = handles.map((h, r) => {
    const f = ({ patches }) => {
      const t = performance.now();
      for (const p of patches) {
        if (p.action === "insert" && p.path[0] === "messages" && p.path.length === 2) {
          for (const v of p.values ?? []) if (v && typeof v === "object" && v.id) arrivals[r].push([String(v.id), t]);
        }
        // A new record's id arrives as a put (scalar) or a splice (text).
        if ((p.action === "put" || p.action === "splice") && p.path[0] === "messages" && p.path[2] === "id" && p.value) arrivals[r].push([p.value, t]);
      }
    };
    h.on("change", f);
    return f;
  });
  const sent = new Map();
  const period = 1000 / rate;
  const t0 = performance.now();
  for (let k = 0; k < count; k++) {
    const wait = t0 + k * period - performance.now();
    if (wait > 0) await sleep(wait);
    const s = k % repos.length;
    const rec = record(repos[s].name, k);
    const call = performance.now();
    handles[s].change((d) => {
      d.messages.push(rec);
    });
    sent.set(rec.id, [s, call, performance.now()]);
  }
  const achieved = count / ((performance.now() - t0) / 1000);
  const expected = count * (repos.length - 1);
  await waitFor("every message everywhere", 30000, () => arrivals.reduce((a, v) => a + v.filter(([id]) => sent.get(id)?.[0] !== undefined).length, 0) >= expected);
  handles.forEach((h, r) => h.off("change", listeners[r]));
  const samples = [];
  arrivals.forEach((list, r) => {
    for (const [id, t] of list) {
      const s = sent.get(id);
      if (s && s[0] !== r) samples.push(Math.max(0, t - s[2]));
    }
  });
  samples.sort((a, b) => a - b);
  return { samples, missing: Math.max(0, expected - samples.length), achieved };
}

async function benchLatency() {
  const nodeCounts = (opt("--nodes") ?? (tiny ? "2" : "2,10")).split(",").map(Number);
  const secsFor = (r) => (tiny ? (r <= 10 ? 2 : 1) : r <= 10 ? 20 : r <= 100 ? 10 : 5);
  const rates = (opt("--rates") ?? (tiny ? "10,100" : "10,100,1000")).split(",").map(Number).map((r) => [r, secsFor(r)]);
  for (const n of nodeCounts) {
    const root = tmp();
    const repos = [];
    for (let i = 0; i < n; i++) repos.push(await startRepo(`n${i}`, path.join(root, `n${i}`), repos.map((r) => r.port), i < n - 1));
    await waitFor("the mesh", 60000, () => repos.every((r) => r.repo.peers.length >= n - 1));
    for (const [rate, secs] of rates) {
      const count = rate * secs;
      const p50 = [], p99 = [], p999 = [], max = [], ach = [];
      let missing = 0;
      for (let run = 0; run < runs; run++) {
        const r = await latencyOnce(repos, rate, count);
        if (!r) {
          console.log(`automerge-repo latency nodes=${n} rate=${rate}/s run=${run}: the new document never became available (find() kept answering "unavailable"); overloaded, no further runs`);
          break;
        }
        console.log(`automerge-repo latency nodes=${n} rate=${rate}/s run=${run}: samples=${r.samples.length} p50=${pct(r.samples, 0.5).toFixed(2)}ms p99=${pct(r.samples, 0.99).toFixed(2)}ms p99.9=${pct(r.samples, 0.999).toFixed(2)}ms max=${r.samples.at(-1)?.toFixed(2)}ms missing=${r.missing} achieved=${r.achieved.toFixed(0)}/s`);
        p50.push(pct(r.samples, 0.5));
        p99.push(pct(r.samples, 0.99));
        p999.push(pct(r.samples, 0.999));
        max.push(r.samples.at(-1) ?? NaN);
        ach.push(r.achieved);
        missing += r.missing;
        if (r.missing > 0.01 * count * (n - 1)) {
          console.log(`automerge-repo latency nodes=${n} rate=${rate}/s: overloaded, no further runs`);
          break;
        }
      }
      if (!p50.length) {
        result({ bench: "latency", nodes: n, rate, messages: count, runs: 0, overloaded: true });
        continue;
      }
      result({
        bench: "latency", nodes: n, rate, messages: count, samples_per_run: count * (n - 1), runs: p50.length,
        p50_ms: median(p50), p50_spread: spread(p50), p99_ms: median(p99), p99_spread: spread(p99),
        p999_ms: median(p999), p999_spread: spread(p999), max_ms: median(max), missing, achieved_rate: median(ach),
      });
    }
    for (const r of repos) await stopRepo(r);
    fs.rmSync(root, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- catch-up

// A TCP relay on 127.0.0.1 counting bytes each way.
async function proxy(targetPort) {
  const counts = { up: 0, down: 0 };
  const sockets = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, "127.0.0.1");
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.setNoDelay(true);
      s.on("error", () => {});
      s.on("close", () => sockets.delete(s));
    }
    client.on("data", (b) => {
      counts.up += b.length;
      upstream.write(b);
    });
    upstream.on("data", (b) => {
      counts.down += b.length;
      client.write(b);
    });
    client.on("end", () => upstream.end());
    upstream.on("end", () => client.end());
  });
  server.maxConnections = 64;
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: server.address().port,
    counts,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

const total = (handles) => handles.reduce((a, h) => a + (h.doc()?.messages?.length ?? 0), 0);

async function catchupOnce(msgs, convCount) {
  const root = tmp();
  const a = await startRepo("writer", path.join(root, "a"), []);
  const docs = [];
  for (let i = 0; i < convCount; i++) docs.push(a.repo.create({ messages: [] }));
  // B meets A and learns the documents, then leaves (flushing its storage).
  let b = await startRepo("rejoiner", path.join(root, "b"), [a.port], false);
  await waitFor("B to connect", 30000, () => b.repo.peers.length >= 1);
  for (const d of docs) await b.repo.find(d.url);
  await sleep(200);
  await stopRepo(b);
  // A writes while B is away.
  const before = docs.map((d) => [A.save(d.doc()).length, A.getHeads(d.doc())]);
  for (let i = 0; i < msgs; i++) {
    docs[i % convCount].change((d) => {
      d.messages.push(record("writer", i));
    });
  }
  let savedBytes = 0, changeBytes = 0;
  docs.forEach((d, i) => {
    const doc = d.doc();
    savedBytes += A.save(doc).length - before[i][0];
    changeBytes += A.saveSince(doc, before[i][1]).length;
  });
  await a.repo.flush();
  // B rejoins through the proxy, from its own storage.
  const p = await proxy(a.port);
  const t0 = performance.now();
  b = await startRepo("rejoiner", path.join(root, "b"), [p.port], false);
  const handles = [];
  for (const d of docs) handles.push(await b.repo.find(d.url));
  const ok = await waitFor("B to hold every message", 120000, () => total(handles) >= msgs);
  const secs = (performance.now() - t0) / 1000;
  const wire = p.counts.up + p.counts.down;
  const got = total(handles);
  let last = -1;
  for (let i = 0; i < 40 && p.counts.up + p.counts.down !== last; i++) {
    last = p.counts.up + p.counts.down;
    await sleep(250);
  }
  const settled = p.counts.up + p.counts.down;
  await stopRepo(b);
  await stopRepo(a);
  await p.close();
  fs.rmSync(root, { recursive: true, force: true });
  return { secs, wire, up: p.counts.up, settled, changeBytes, savedBytes, got, ok };
}

async function benchCatchup() {
  const convCount = tiny ? 10 : 50;
  for (const msgs of catchupSizes) {
    const n = msgs > 20000 ? 1 : runs;
    const secs = [], ratios = [];
    let last;
    for (let run = 0; run < n; run++) {
      const c = await catchupOnce(msgs, convCount);
      console.log(`automerge-repo catch-up ${msgs} msgs / ${convCount} docs run=${run}: all ${c.got}/${msgs} in ${c.secs.toFixed(3)}s; wire ${c.wire} B (from B ${c.up} B, settled ${c.settled} B); missing changes ${c.changeBytes} B raw, ${c.savedBytes} B as compressed save; ratio ${(c.wire / c.changeBytes).toFixed(2)}x raw`);
      secs.push(c.secs);
      ratios.push(c.wire / c.changeBytes);
      last = c;
    }
    result({
      bench: "catchup", messages: msgs, conversations: convCount, runs: n,
      secs: median(secs), secs_spread: spread(secs), complete: last.got >= msgs,
      wire_bytes: last.wire, wire_from_b: last.up, settled_wire_bytes: last.settled,
      missing_chunk_bytes: last.changeBytes, missing_saved_bytes: last.savedBytes,
      ratio_vs_chunks: median(ratios), ratio_spread: spread(ratios), ratio_vs_save: last.wire / last.savedBytes,
    });
  }
}

const t = performance.now();
console.log(`automerge-repo race (${tiny ? "tiny" : "full"}; runs=${runs}; node ${process.version})`);
if (wants("latency")) await benchLatency();
if (wants("catchup")) await benchCatchup();
console.log(`race: done in ${((performance.now() - t) / 1000).toFixed(1)}s`);
process.exit(0);
