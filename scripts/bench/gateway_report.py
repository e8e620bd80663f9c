#!/usr/bin/env python3
"""Summary of scripts/bench-gateway.sh: direct vs each gateway ("base" and "gateway" when the
run has a base build) for each phase, the latency each adds (its data latency, end of data to
final reply, minus the sink's at the same percentile, and their ratio), CPU per message, RSS
with idle connections, and each gateway's own view from its session log (outcomes,
end-of-data-to-reply latency per outcome), and each gateway's context switches per message
(voluntary ones: a thread went to sleep, i.e. a hand-off between threads), by thread.

    gateway_report.py results.jsonl [--sessions NAME=sessions.jsonl]... [--machine TEXT]
                      [--commit REV] [--load TEXT]
"""
import argparse
import collections
import glob
import os
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


def lat(r, key):
    """A run's latency percentiles of one kind (older results have only `lat_us`)."""
    return r.get(key) or r["lat_us"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--sessions", action="append", default=[], metavar="NAME=FILE")
    ap.add_argument("--machine", default="")
    ap.add_argument("--commit", default="")
    ap.add_argument("--load", default="")
    a = ap.parse_args()
    runs = {}
    idle = {}
    for line in open(a.results):
        if not line.strip():
            continue
        r = json.loads(line)
        if r["label"].startswith("idle"):
            idle[r["label"]] = r
        else:
            runs[r["label"]] = r
    paths = [p for p in ("base", "gateway") if any(k.endswith("-" + p) for k in runs)]

    print(f"gateway load benchmark, {time.strftime('%Y-%m-%d', time.gmtime())}"
          f"{', ' + a.machine if a.machine else ''}{', commit ' + a.commit if a.commit else ''}")
    if a.load:
        print(f"load average before the run: {a.load}")
    s = runs.get("sink-alone")
    if s:
        print(f"\nsink alone: {s['msg_per_s']:.0f} msg/s, "
              f"{s['cpu'].get('sink', {}).get('cpu_us_per_msg', 0):.1f} µs CPU/msg "
              f"(C={s['conns']}, K={s['per_conn']})")

    print("\nData latency: end-of-data marker written to the final reply (µs). Added: the path's"
          " minus direct's at the same percentile; ×: the path's over direct's.")
    print("\n| phase | load | path | msg/s | data p50 | data p99 | added p50 | added p99 "
          "| × p50 / p99 | open-loop p99 | late starts | gateway CPU µs/msg "
          "| switches/msg vol + invol | replies |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    thread_switches = []
    for ph, desc in PHASES.items():
        d = runs.get(f"{ph}-direct")
        if not d:
            continue
        load = (f"C={d['conns']} K={d['per_conn']}"
                + (f" {d['rate_target']:.0f}/s" if d["rate_target"] else " max")
                + ("" if d["pipelining"] else " no-pipe"))
        dl = lat(d, "data_lat_us")
        for i, name in enumerate(["direct"] + paths):
            r = runs.get(f"{ph}-{name}")
            if not r:
                continue
            rl = lat(r, "data_lat_us")
            added50 = added99 = ratio = cpu = switches = ""
            if name != "direct":
                sw = r["cpu"].get("gateway", {}).get("switches_per_msg")
                if sw:
                    switches = f"{sw['voluntary']:.2f} + {sw['involuntary']:.2f}"
                    thread_switches.append((ph, name, sw["threads"]))
                added50 = str(rl["p50"] - dl["p50"])
                added99 = str(rl["p99"] - dl["p99"])
                ratio = f"{rl['p50'] / max(dl['p50'], 1):.1f} / {rl['p99'] / max(dl['p99'], 1):.1f}"
                cpu = f"{r['cpu'].get('gateway', {}).get('cpu_us_per_msg', 0):.0f}"
            slot = r.get("slot_lat_us", {}).get("p99", "") if r["rate_target"] else ""
            codes = " ".join(f"{c}:{n}" for c, n in sorted(r["codes"].items()))
            if r["errors"]:
                codes += f" errors:{r['errors']}"
            print(f"| {ph + ' ' + desc if i == 0 else ''} | {load if i == 0 else ''} "
                  f"| {name} | {r['msg_per_s']:.0f} | {rl['p50']} | {rl['p99']} "
                  f"| {added50} | {added99} | {ratio} | {slot} "
                  f"| {r.get('late_starts', 0) if r['rate_target'] else ''} | {cpu} "
                  f"| {switches} | {codes} |")
    if thread_switches:
        print("\nContext switches per message by thread (voluntary + involuntary):")
        for ph, name, threads in thread_switches:
            print(f"  {ph} {name}: " + ", ".join(
                f"{t} {v:.2f} + {n:.2f}"
                for t, (v, n) in sorted(threads.items(), key=lambda kv: -sum(kv[1]))))

    for label, r in sorted(idle.items()):
        for name, v in r["rss"].items():
            print(f"\n{name} with {r['open']} idle connections ({r['refused']} refused): "
                  f"VmRSS {v['rss_idle_kib'] / 1024:.1f} MiB (was {v['rss_before_kib'] / 1024:.1f}"
                  f" MiB before; {v['bytes_per_conn'] / 1024:.1f} KiB per connection)")

    for spec in a.sessions:
        name, _, path = spec.partition("=")
        by = collections.defaultdict(list)
        reasons = collections.Counter()
        for line in open(path):
            if not line.strip():
                continue
            r = json.loads(line)
            by[r["outcome"]].append(r["latency_us"])
            if r["outcome"] in ("reject", "quarantine", "tag"):
                reasons.update(r["reasons"])
        total = sum(len(v) for v in by.values())
        print(f"\n{name}'s session log: {total} messages (warm-up included); end of DATA to "
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
        # The client's side (bench-gateway.sh's replies-PHASE-NAME.tsv): end of data to the
        # final reply as the load generator saw it, per outcome of the queue id in the reply.
        outcome_of = {}
        for line in open(path):
            if line.strip():
                r = json.loads(line)
                outcome_of[r["queue_id"]] = r["outcome"]
        for replies in sorted(glob.glob(os.path.join(os.path.dirname(path),
                                                     f"replies-*-{name}.tsv"))):
            phase = os.path.basename(replies)[len("replies-"):-len(f"-{name}.tsv")]
            seen = collections.defaultdict(list)
            for line in open(replies):
                qid, _, us = line.rstrip("\n").partition("\t")
                seen[outcome_of.get(qid, "unknown")].append(int(us))
            n = sum(len(v) for v in seen.values())
            if not n:
                continue
            print(f"\n{name}, phase {phase}: the client's data latency (end of data to final "
                  f"reply, µs) by outcome, {n} messages:")
            print("\n| outcome | messages | p50 µs | p99 µs | max µs |")
            print("|---|---:|---:|---:|---:|")
            for o, v in sorted(seen.items(), key=lambda kv: -len(kv[1])):
                v.sort()
                print(f"| {o} | {len(v)} | {pct(v, 50)} | {pct(v, 99)} | {v[-1]} |")


if __name__ == "__main__":
    main()
