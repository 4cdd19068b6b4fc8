// Prints the `RESULT {json}` lines of benches/e2e.rs and race.mjs as one
// markdown table per benchmark, huddle beside automerge-repo where both ran.
//   node table.mjs huddle.log race.log
import fs from "node:fs";

const rows = [];
for (const f of process.argv.slice(2)) {
  if (!fs.existsSync(f)) continue;
  for (const line of fs.readFileSync(f, "utf8").split("\n")) {
    if (line.startsWith("RESULT ")) {
      try {
        rows.push(JSON.parse(line.slice(7)));
      } catch {}
    }
  }
}
const n = (v, d = 1) => (typeof v === "number" && Number.isFinite(v) ? v.toFixed(d) : "–");
const find = (impl, bench, pred) => rows.find((r) => r.impl === impl && r.bench === bench && pred(r));
const ratio = (a, b) => (typeof a === "number" && typeof b === "number" && b > 0 ? `${(a / b).toFixed(2)}×` : "–");
const yes = (b) => (b ? "met" : "missed");

const lat = rows.filter((r) => r.impl === "huddle" && r.bench === "latency");
if (lat.length) {
  console.log("### Latency (send returned → MessageAdded on each other node), ms; median of runs");
  console.log("| nodes | rate/s | huddle p50 | p99 | p99.9 | samples missing | automerge-repo p50 | p99 | p99.9 | samples missing | p50 ratio (huddle/am) |");
  console.log("|---|---|---|---|---|---|---|---|---|---|---|");
  for (const h of lat) {
    const a = find("automerge-repo", "latency", (r) => r.nodes === h.nodes && r.rate === h.rate) ?? {};
    console.log(`| ${h.nodes} | ${h.rate} | ${n(h.p50_ms, 2)} | ${n(h.p99_ms, 2)} | ${n(h.p999_ms, 2)} | ${h.missing} | ${n(a.p50_ms, 2)} | ${n(a.p99_ms, 2)} | ${n(a.p999_ms, 2)} | ${a.missing ?? "–"} | ${ratio(h.p50_ms, a.p50_ms)} |`);
  }
  console.log();
}
const tp = rows.filter((r) => r.bench === "throughput");
if (tp.length) {
  console.log("### Durable ingest, one node (target ≥ 5,000 msg/s into one conversation)");
  console.log("| conversations | concurrent senders | msg/s (median) | spread | verdict |");
  console.log("|---|---|---|---|---|");
  for (const r of tp) console.log(`| ${r.conversations} | ${r.concurrent} | ${n(r.msgs_per_s, 0)} | ${r.spread} | ${yes(r.met)} |`);
  console.log();
}
const cu = rows.filter((r) => r.impl === "huddle" && r.bench === "catchup");
if (cu.length) {
  console.log("### Catch-up (targets: ≤ 1 s for 10k, ≤ 1.25× bytes)");
  console.log("| messages | huddle s | wire B | ×changes | ×save | automerge-repo s | wire B | ×changes | ×save | time ratio (huddle/am) |");
  console.log("|---|---|---|---|---|---|---|---|---|---|");
  for (const h of cu) {
    const a = find("automerge-repo", "catchup", (r) => r.messages === h.messages) ?? {};
    console.log(`| ${h.messages} | ${n(h.secs, 3)} | ${h.wire_bytes} | ${n(h.ratio_vs_chunks, 2)} | ${n(h.ratio_vs_save, 2)} | ${n(a.secs, 3)} | ${a.wire_bytes ?? "–"} | ${n(a.ratio_vs_chunks, 2)} | ${n(a.ratio_vs_save, 2)} | ${ratio(h.secs, a.secs)} |`);
  }
  console.log();
}
for (const r of rows.filter((r) => r.bench === "scale")) {
  console.log("### Scale: `huddle run` processes, full mesh, steady traffic (target < 60 MB RSS each)");
  console.log("| nodes | seed msgs | sent | lost nodes | RSS end median/max MB | VmHWM max MB | CPU % per node median/max | verdict |");
  console.log("|---|---|---|---|---|---|---|---|");
  console.log(`| ${r.nodes} | ${r.seed_messages} | ${r.sent} (${r.failed} failed) | ${r.nodes_incomplete} | ${n(r.rss_end_median_mb)}/${n(r.rss_end_max_mb)} | ${n(r.vmhwm_max_mb)} | ${n(r.cpu_pct_median)}/${n(r.cpu_pct_max)} | ${yes(r.met)} |`);
  console.log();
}
const cold = rows.filter((r) => r.bench === "cold");
if (cold.length) {
  console.log("### Cold start: `huddle run` until the API answers (target ≤ 1 s at 1M messages / 1k conversations)");
  console.log("| messages | conversations | s (median) | spread | RSS MB | store MB | linear extrapolation to 1M, s |");
  console.log("|---|---|---|---|---|---|---|");
  for (const r of cold) console.log(`| ${r.messages} | ${r.conversations} | ${n(r.secs, 3)} | ${r.secs_spread} | ${n(r.rss_mb)} | ${n(r.store_mb)} | ${n(r.extrapolated_1m_secs)} (extrapolated) |`);
}
