#!/usr/bin/env python3
"""Writes the hospital scale scenarios (issue 25): SITES sites of PER devices,
joined only by gateways that are members of nothing, one site cut off for
20 minutes, 10 messages a minute hospital-wide.

    python3 sim/scale/gen.py 10 20  > sim/scale/hospital-200.toml
    python3 sim/scale/gen.py 10 100 > sim/scale/hospital-1000.toml

Run one with `huddle-sim --scenario sim/scale/hospital-200.toml --seed 1`
(release). Not built in: `--all` and CI do not run them.
"""
import sys

sites, per = int(sys.argv[1]), int(sys.argv[2])
n = sites * per
gw = lambda s: s * per + per - 1  # each site's last device
dev = lambda s, k: s * per + k
out = []
w = out.append
w(f'name = "hospital-{n}"')
w(f'description = "{sites} sites of {per} devices joined only by gateways that are members of no conversation (a star on site 0 and a ring); site 3 is cut off for 20 min; 10 messages a minute hospital-wide."')
w('duration = "60m"')
w('settle = "30m"')
w('')
for s in range(sites):
    w('[[site]]')
    w(f'name = "site-{s}"')
    w(f'devices = {per}')
    w('latency = { min = "0.3ms", max = "3ms", tail = 0.01 }')
    w('bandwidth_mbps = 100')
    w('loss = 0.001')
    w('discovery = ["200ms", "3s"]')
    if s == 0:
        oncall = ",".join(str(dev(t, 0)) for t in range(sites))
        surgeon = ",".join(str(dev(t, 1)) for t in range(sites))
        beds = ",".join(f"{dev(t, 2)},{dev(t, 3)}" for t in range(sites))
        w(f'roles = {{ oncall = "{oncall}", surgeon = "{surgeon}", bed-manager = "{beds}" }}')
    w('')
links = [(0, s) for s in range(1, sites)] + [(s, s + 1) for s in range(1, sites - 1)]
for a, b in links:
    w('[[link]]')
    w(f'name = "gw-{a}-{b}"')
    w(f'a = "site-{a}"')
    w(f'b = "site-{b}"')
    w(f'pairs = [[{gw(a)}, {gw(b)}]]')
    w('latency = { min = "5ms", max = "30ms", tail = 0.02 }')
    w('bandwidth_kbps = 10000')
    w('loss = 0.005')
    w('up = "always"')
    w('')
def conv(kind, creator, **kv):
    w('[[conversation]]')
    w(f'kind = "{kind}"')
    for k, v in kv.items():
        w(f'{k} = "{v}"')
    w(f'creator = {creator}')
    w('')
conv("role", dev(0, 0), role="oncall")
conv("role", dev(0, 1), role="surgeon")
conv("role", dev(1, 2), role="bed-manager")
for s in range(sites):
    conv("group", dev(s, 4), title=f"Ward {s}", members=f"{dev(s, 0)}-{dev(s, per - 2)}")
for s in range(sites - 1):
    members = ",".join(str(dev(t, k)) for t in (s, s + 1) for k in (5, 6, 7))
    conv("group", dev(s, 5), title=f"Transfers {s}-{s + 1}", members=members)
for s in range(sites - 1):
    conv("direct", dev(s, 8), members=f"{dev(s, 8)},{dev(s + 1, 9)}")
w('[traffic]')
w('rate_per_min = 10')
w('start = "1m"')
w('stop = "55m"')
w('body = [20, 300]')
w('urgent = 0.15')
w('read = 0.03')
w('ack = 0.5')
w('')
for at, up in (("15m", "false"), ("35m", "true")):
    for a, b in links:
        if 3 in (a, b):
            w('[[event]]')
            w(f'at = "{at}"')
            w('action = "link"')
            w(f'link = "gw-{a}-{b}"')
            w(f'up = {up}')
            w('')
print("\n".join(out).rstrip())
