#!/usr/bin/env bash
# Starts a throw-away huddle node on 127.0.0.1 (no mDNS), lets the
# js-libp2p peer in js-libp2p/check.mjs dial it, ping it and read its
# identify record, then stops the node and removes its data directory.
#
#   tests/interop/run-js-libp2p.sh [stock|accept-sync|both] [--watch-secs N]
#
#   stock        the JS peer speaks only libp2p's protocols (the acceptance
#                point of issue 3 as written)
#   accept-sync  the JS peer also reads the frames the huddle node sends
#                on /huddle/sync/2 (without answering them)
#   both         (default) stock, then accept-sync, against the same node
#
# Environment:
#   HUDDLE_BIN  the huddle binary (default: target/debug/huddle; build it
#               first with `cargo build`)
#   RUST_LOG    passed to the node (e.g. RUST_LOG=huddle=debug,libp2p=debug)
#
# Needs node >= 20 and `npm ci` run once in tests/interop/js-libp2p; see
# tests/interop/js-libp2p/README.md.
# Exit status: 0 if every mode run passed (ping and identify both worked),
# 1 otherwise or if the node could not be started, 2 on bad arguments.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${HUDDLE_BIN:-$root/target/debug/huddle}"
js="$here/js-libp2p"

mode="both"
case "${1:-}" in
    stock|accept-sync|both) mode="$1"; shift ;;
    -*|"") ;;
    *) echo "usage: $0 [stock|accept-sync|both] [--watch-secs N]" >&2; exit 2 ;;
esac
case "$mode" in
    both) modes=(stock accept-sync) ;;
    *) modes=("$mode") ;;
esac

if [[ ! -x "$bin" ]]; then
    echo "error: $bin not found: run \`cargo build\` first (or set HUDDLE_BIN)" >&2
    exit 1
fi
if [[ ! -d "$js/node_modules" ]]; then
    echo "error: run \`npm ci\` in $js first" >&2
    exit 1
fi

data="$(mktemp -d -t huddle-interop.XXXXXX)"
out="$data/run.out"
err="$data/run.err"
pid=""

cleanup() {
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do # up to 10 s for a clean stop
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "the node did not stop within 10 s: killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$data"
}
trap cleanup EXIT INT TERM

h() { timeout 30 "$bin" --data-dir "$data/node" "$@" </dev/null; }

echo "== huddle: $("$bin" --version)"
setup() { h "$@" >>"$data/setup.log" 2>&1 || { cat "$data/setup.log" >&2; exit 1; }; }
setup init --name "Interop Probe" --role nurse
setup team create "Interop Ward"

# Loopback only, no mDNS, the local API on a loopback port.
NO_COLOR=1 "$bin" --data-dir "$data/node" --json run \
    --listen /ip4/127.0.0.1/tcp/0 --no-mdns --api 127.0.0.1:0 \
    </dev/null >"$out" 2>"$err" &
pid=$!

addr=""
for _ in $(seq 1 100); do # up to 10 s for the "started" line
    addr="$(sed -n 's/.*"event":"started".*"listen":\["\([^"]*\)".*/\1/p' "$out" | head -n1)"
    [[ -n "$addr" ]] && break
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 0.1
done
if [[ -z "$addr" ]]; then
    echo "error: the huddle node did not report a listen address" >&2
    cat "$out" "$err" >&2
    exit 1
fi
case "$addr" in
    /ip4/127.*/p2p/*) ;;
    *) echo "error: unexpected listen address $addr (expected /ip4/127.x.x.x/.../p2p/...)" >&2; exit 1 ;;
esac
echo "== huddle node listening on $addr"

status=0
summary=()
for m in "${modes[@]}"; do
    echo
    echo "== js-libp2p peer, mode $m"
    flags=()
    [[ "$m" == accept-sync ]] && flags+=(--accept-sync)
    s=0
    (cd "$js" && timeout 120 node check.mjs "$addr" "${flags[@]}" "$@") | tee "$data/check-$m.out" || s=$?
    [[ $s -ne 0 ]] && status=1
    summary+=("$m: $(grep '^RESULT:' "$data/check-$m.out" || echo "RESULT: FAIL (check.mjs exited with $s)")")
done

echo

echo "== huddle node output (stdout, JSON events)"
cat "$out"
if [[ -s "$err" ]]; then
    echo "== huddle node output (stderr)"
    cat "$err"
fi
echo
echo "== summary"
printf '%s\n' "${summary[@]}"
exit "$status"
