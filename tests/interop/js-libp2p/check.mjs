// A stock js-libp2p peer (TCP + Noise + Yamux, identify, ping — nothing
// huddle-specific) dials a huddle node, pings it and prints the identify
// record the node sent. See README.md beside this file.
//
//   node check.mjs /ip4/127.0.0.1/tcp/<port>/p2p/<huddle device id> [--accept-sync] [--watch-secs N]
//
// Without --accept-sync the peer is stock: it speaks nothing but libp2p's own
// protocols. With --accept-sync it also accepts the frames a huddle node
// sends on /huddle/sync/2 and reads them as transport.md §4 says,
// without answering them (it has no certificate and sends no Hello), so the
// huddle node keeps the connection until its hello timeout.
//
// After the checks it keeps the connection open (default 20 s, --watch-secs 0
// to skip) and reports whether and when the huddle node closes it: the JS
// peer holds no membership certificate, so the huddle session refuses it.
//
// Exit status: 0 when ping and identify both succeeded and the identify
// record lists the expected protocols; 1 otherwise; 2 on bad arguments.
// Only loopback addresses are accepted, and this peer listens on nothing and
// discovers nothing (no mDNS, no bootstrap list).

import './node20.mjs' // must stay first: see the file
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { multiaddr } from '@multiformats/multiaddr'
import { readFileSync } from 'node:fs'

const OVERALL_TIMEOUT_MS = 90_000
const STEP_TIMEOUT_MS = 10_000
const EXPECTED_PROTOCOLS = ['/huddle/sync/2', '/ipfs/ping/1.0.0', '/ipfs/id/1.0.0']
const SYNC_PROTOCOL = '/huddle/sync/2'
const MAX_FRAME_LEN = 1_048_576
const REFUSAL_REASONS = {
  1: 'NotAMember', 2: 'WrongTeam', 3: 'BadSignature', 4: 'Expired', 5: 'NotYetValid', 6: 'Revoked',
  7: 'WrongDevice', 8: 'UnsupportedVersion', 9: 'ProtocolViolation', 10: 'Malformed', 11: 'LimitExceeded', 12: 'HelloTimeout'
}

function usage (msg) {
  if (msg) console.error(`error: ${msg}`)
  console.error('usage: node check.mjs /ip4/127.0.0.1/tcp/<port>/p2p/<peer id> [--accept-sync] [--watch-secs N]')
  process.exit(2)
}

const args = process.argv.slice(2)
let target
let watchSecs = 20
let acceptSync = false
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--accept-sync') {
    acceptSync = true
  } else if (args[i] === '--watch-secs') {
    watchSecs = Number(args[++i])
    if (!Number.isFinite(watchSecs) || watchSecs < 0 || watchSecs > 60) usage('--watch-secs takes 0..60')
  } else if (target === undefined) {
    target = args[i]
  } else {
    usage(`unexpected argument ${args[i]}`)
  }
}
if (target === undefined) usage('the huddle node\'s address is missing')

let ma
try {
  ma = multiaddr(target)
} catch (e) {
  usage(`${target} is not a multiaddr: ${e.message}`)
}
const parts = ma.getComponents()
if (parts[0]?.name !== 'ip4' || !parts[0].value.startsWith('127.') || parts[1]?.name !== 'tcp') {
  usage('only /ip4/127.x.x.x/tcp/<port>/p2p/<peer id> addresses are accepted (loopback only)')
}
if (!parts.some(p => p.name === 'p2p')) usage('the address must end in /p2p/<peer id> so that Noise checks who answers')

// Bound the whole run, whatever hangs.
const guard = setTimeout(() => {
  console.error(`FAIL: gave up after ${OVERALL_TIMEOUT_MS / 1000} s`)
  process.exit(1)
}, OVERALL_TIMEOUT_MS)
guard.unref()

const versionOf = (pkg) => {
  try {
    return JSON.parse(readFileSync(new URL(`node_modules/${pkg}/package.json`, import.meta.url))).version
  } catch {
    return '?'
  }
}
const JS_PACKAGES = ['libp2p', '@libp2p/tcp', '@chainsafe/libp2p-noise', '@chainsafe/libp2p-yamux', '@libp2p/identify', '@libp2p/ping']

const t0 = Date.now()
const since = () => `+${((Date.now() - t0) / 1000).toFixed(3)}s`
const log = (...a) => console.log(since().padStart(9), ...a)

console.log(`node ${process.version}; ${JS_PACKAGES.map(p => `${p}@${versionOf(p)}`).join(', ')}`)

const node = await createLibp2p({
  addresses: { listen: [] }, // dial only
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: {
    identify: identify(),
    ping: ping()
  }
})

let ok = true
let closedAt = null
const rtts = []
let identifyOk = false
let identifySource = null
let identified = null

// Describes a huddle frame (protocol/wire.md §9) by its tag.
function describeFrame (f) {
  switch (f[0]) {
    case 1: return `Hello (version ${f[1]}, ${f.length} bytes)`
    case 2: return `Refuse(${f[1]} ${REFUSAL_REASONS[f[1]] ?? '?'})`
    case 3: return `Catalog (${f.length} bytes)`
    case 4: return `Header (${f.length} bytes)`
    case 5: return `Sync (${f.length} bytes)`
    default: return `unknown tag ${f[0]} (${f.length} bytes)`
  }
}

// One long-lived stream per session: u32 big-endian length ‖ frame, again
// and again (protocol/transport.md §4). Frames are read and logged, never
// answered.
async function sinkFrame ({ stream }) {
  try {
    let buf = Buffer.alloc(0)
    for await (const chunk of stream.source) {
      buf = Buffer.concat([buf, chunk.subarray()])
      while (buf.length >= 4) {
        const len = buf.readUInt32BE(0)
        if (len > MAX_FRAME_LEN) throw new Error(`frame of ${len} bytes is too long`)
        if (buf.length < 4 + len) break
        log(`${SYNC_PROTOCOL}: received ${describeFrame(buf.subarray(4, 4 + len))}; not answering`)
        buf = buf.subarray(4 + len)
      }
    }
    if (buf.length !== 0) throw new Error(`the stream ended inside a frame (${buf.length} bytes left)`)
    log(`${SYNC_PROTOCOL}: the node closed its stream`)
  } catch (e) {
    log(`${SYNC_PROTOCOL}: stream failed: ${e.name}: ${e.message}`)
    stream.abort(e)
  }
}
if (acceptSync) {
  await node.handle(SYNC_PROTOCOL, sinkFrame, { maxInboundStreams: 2 })
}

node.addEventListener('peer:identify', (evt) => {
  identified ??= evt.detail
  log('event peer:identify from', evt.detail.peerId.toString())
})
node.addEventListener('connection:close', (evt) => {
  const c = evt.detail
  closedAt = Date.now()
  log(`event connection:close ${c.remoteAddr.toString()} (direction ${c.direction}, status ${c.status})`)
})

try {
  log(`js peer ${node.peerId.toString()} (key type ${node.peerId.type}); mode: ${acceptSync ? `stock + reads ${SYNC_PROTOCOL} frames` : 'stock'}`)
  log(`dialing ${ma.toString()}`)
  const conn = await node.dial(ma, { signal: AbortSignal.timeout(STEP_TIMEOUT_MS) })
  const connectedAt = conn.timeline?.open ?? Date.now()
  log(`connected: remote peer ${conn.remotePeer.toString()}, encryption ${conn.encryption}, multiplexer ${conn.multiplexer}`)

  // Ping: a few round trips over /ipfs/ping/1.0.0.
  for (let i = 1; i <= 3; i++) {
    try {
      const rtt = await node.services.ping.ping(conn.remotePeer, { signal: AbortSignal.timeout(STEP_TIMEOUT_MS) })
      log(`ping ${i}: rtt ${rtt} ms`)
      rtts.push(rtt)
    } catch (e) {
      log(`ping ${i}: FAILED: ${e.name}: ${e.message}`)
      break
    }
  }
  if (rtts.length === 0) ok = false

  // Identify: ask explicitly (libp2p also runs it by itself when the
  // connection opens; that result arrives as the peer:identify event).
  let record = null
  try {
    record = await node.services.identify.identify(conn, { signal: AbortSignal.timeout(STEP_TIMEOUT_MS) })
    identifySource = 'explicit request'
  } catch (e) {
    log(`identify: explicit request FAILED: ${e.name}: ${e.message}`)
    record = identified
    if (record) {
      identifySource = 'automatic identify on connect only'
      log('identify: using the record from the automatic identify on connect')
    }
  }
  if (record === null) {
    ok = false
    log('identify: no record received')
  } else {
    console.log('identify record from the huddle node:')
    console.log(JSON.stringify({
      peerId: record.peerId.toString(),
      agentVersion: record.agentVersion,
      protocolVersion: record.protocolVersion,
      protocols: record.protocols,
      listenAddrs: record.listenAddrs.map(a => a.toString()),
      observedAddr: record.observedAddr?.toString(),
      publicKey: record.publicKey ? Buffer.from(record.publicKey).toString('hex') : undefined,
      signedPeerRecord: record.signedPeerRecord ? 'present' : 'absent'
    }, null, 2))
    if (record.peerId.toString() !== conn.remotePeer.toString()) {
      ok = false
      log('identify: FAIL: the record is for another peer')
    }
    const missing = EXPECTED_PROTOCOLS.filter(p => !record.protocols.includes(p))
    if (missing.length > 0) {
      ok = false
      log(`identify: FAIL: protocols missing from the record: ${missing.join(', ')}`)
    } else {
      log(`identify: OK, the record lists ${EXPECTED_PROTOCOLS.join(', ')}`)
      identifyOk = true
    }
  }

  // What the huddle node does with a peer that is not a team member.
  if (watchSecs > 0 && closedAt === null) {
    log(`watching the connection for up to ${watchSecs} s (huddle refuses peers without a certificate)…`)
    const deadline = Date.now() + watchSecs * 1000
    while (closedAt === null && Date.now() < deadline) {
      await new Promise(resolve => setTimeout(resolve, 100))
    }
  }
  if (closedAt !== null) {
    log(`the connection closed ${((closedAt - connectedAt) / 1000).toFixed(3)} s after it was established`)
  } else if (watchSecs > 0) {
    log(`the connection is still open after ${watchSecs} s`)
  }
} catch (e) {
  ok = false
  log(`FAILED: ${e.name}: ${e.message}`)
} finally {
  await node.stop()
}

const pingSummary = rtts.length > 0 ? `ping OK (${rtts.length}/3, rtt ${rtts.join('/')} ms)` : 'ping FAILED'
const identifySummary = identifyOk ? `identify OK (${identifySource})` : 'identify FAILED'
console.log(`RESULT: ${ok ? 'PASS' : 'FAIL'}: ${pingSummary}; ${identifySummary}`)
process.exit(ok ? 0 : 1)
