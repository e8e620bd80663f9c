#!/usr/bin/env python3
"""Summary of scripts/bench-gateway.sh: direct vs gateway for each phase, the latency the
gateway adds (gateway minus direct, at the same percentile), CPU per message, RSS with idle
connections, and the gateway's own view from its session log (outcomes, end-of-data-to-reply
latency per outcome).

    gateway_report.py results.jsonl [sessions.jsonl] [--machine TEXT] [--commit REV]
"""
import argparse
import collections
import json
import time

PHASES = {
    "A": "full speed, K msgs/connection, pipelined",
    "B": "full speed, 1 msg/connection",
    "C": "fixed rate, K msgs/connection, pipelined",
    "D": "fixed rate, K msgs/connection, not pipelined",
    "E": "fixed rate, 1 msg/connection",
}


def pct(sorted_vals, p):
    if not sorted_vals:
        return 0
    k = max(1, -(-len(sorted_vals) * p // 100))
    return sorted_vals[int(k) - 1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("sessions", nargs="?")
    ap.add_argument("--machine", default="")
    ap.add_argument("--commit", default="")
    ap.add_argument("--load", default="")
    a = ap.parse_args()
    runs = {}
    idle = None
    for line in open(a.results):
        if not line.strip():
            continue
        r = json.loads(line)
        if r["label"] == "idle":
            idle = r
        else:
            runs[r["label"]] = r

    print(f"gateway load benchmark, {time.strftime('%Y-%m-%d', time.gmtime())}"
          f"{', ' + a.machine if a.machine else ''}{', commit ' + a.commit if a.commit else ''}")
    if a.load:
        print(f"load average before the run: {a.load}")
    s = runs.get("sink-alone")
    if s:
        print(f"\nsink alone: {s['msg_per_s']:.0f} msg/s, "
              f"{s['cpu'].get('sink', {}).get('cpu_us_per_msg', 0):.1f} µs CPU/msg "
              f"(C={s['conns']}, K={s['per_conn']})")

    print("\n| phase | load | path | msg/s | p50 µs | p99 µs | added p50 µs | added p99 µs "
          "| gateway CPU µs/msg | replies |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---|")
    for ph, desc in PHASES.items():
        d, g = runs.get(f"{ph}-direct"), runs.get(f"{ph}-gateway")
        if not d or not g:
            continue
        load = (f"C={g['conns']} K={g['per_conn']}"
                + (f" {g['rate_target']:.0f}/s" if g["rate_target"] else " max")
                + ("" if g["pipelining"] else " no-pipe"))
        for name, r in (("direct", d), ("gateway", g)):
            added50 = added99 = cpu = ""
            if name == "gateway":
                added50 = str(g["lat_us"]["p50"] - d["lat_us"]["p50"])
                added99 = str(g["lat_us"]["p99"] - d["lat_us"]["p99"])
                cpu = f"{g['cpu'].get('gateway', {}).get('cpu_us_per_msg', 0):.0f}"
            codes = " ".join(f"{c}:{n}" for c, n in sorted(r["codes"].items()))
            if r["errors"]:
                codes += f" errors:{r['errors']}"
            print(f"| {ph} {desc if name == 'direct' else ''} | {load if name == 'direct' else ''} "
                  f"| {name} | {r['msg_per_s']:.0f} | {r['lat_us']['p50']} | {r['lat_us']['p99']} "
                  f"| {added50} | {added99} | {cpu} | {codes} |")
    late = [f"{l}: {r['late_starts']}" for l, r in runs.items() if r.get("late_starts")]
    if late:
        print("\nmessages that started over 2 ms after their rate slot (generator behind): "
              + ", ".join(late))

    if idle:
        for name, v in idle["rss"].items():
            print(f"\n{name} with {idle['open']} idle connections ({idle['refused']} refused): "
                  f"VmRSS {v['rss_idle_kib'] / 1024:.1f} MiB (was {v['rss_before_kib'] / 1024:.1f}"
                  f" MiB before; {v['bytes_per_conn'] / 1024:.1f} KiB per connection)")

    if a.sessions:
        by = collections.defaultdict(list)
        reasons = collections.Counter()
        for line in open(a.sessions):
            if not line.strip():
                continue
            r = json.loads(line)
            by[r["outcome"]].append(r["latency_us"])
            if r["outcome"] in ("reject", "quarantine", "tag"):
                reasons.update(r["reasons"])
        total = sum(len(v) for v in by.values())
        print(f"\ngateway session log: {total} messages (warm-up included); end of DATA to "
              "final reply, as the gateway measures it (engine + relay + store):")
        print("\n| outcome | messages | share | p50 µs | p99 µs | max µs |")
        print("|---|---:|---:|---:|---:|---:|")
        for o, v in sorted(by.items(), key=lambda kv: -len(kv[1])):
            v.sort()
            print(f"| {o} | {len(v)} | {100 * len(v) / total:.1f}% | {pct(v, 50)} "
                  f"| {pct(v, 99)} | {v[-1]} |")
        if reasons:
            print("\nreason codes of reject/quarantine/tag: "
                  + ", ".join(f"{c} {n}" for c, n in reasons.most_common(10)))


if __name__ == "__main__":
    main()
