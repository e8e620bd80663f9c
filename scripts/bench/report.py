#!/usr/bin/env python3
"""unspoof beside each peer, from one run's summaries (run/results/*.summary.json): a
Markdown table of messages per CPU-second (median over the runs) and the ratio of
unspoof-warm (or --ours TOOL) to each peer.

  python3 report.py [--kit ../shared/bench] [--ours unspoof-warm]

Columns:
  msg/CPU-s     the kit's msgs_per_cpu_s: n / (client CPU + server CPU). For servers (rspamd,
                the milters) the client is the kit's Python load generator.
  msg/srv-CPU-s n / server CPU, for servers only: the README's advice for comparing servers.
  ours ÷         ours / each of those two figures. The server-CPU one flatters servers (their
                client's CPU is left out), so it is the conservative ratio for them.
  checks        what the tool verifies in this kit (a DKIM-only peer does less work per message).
"""
import argparse
import glob
import json
import os
import statistics


CHECKS = [  # tool name prefix -> what its runner verifies
    ("unspoof", "SPF DKIM DMARC ARC"),
    ("mailauth", "SPF DKIM DMARC ARC"),
    ("rspamd", "SPF DKIM DMARC ARC"),
    ("perl-mail-dkim", "SPF DKIM DMARC ARC"),
    ("py-full", "SPF DKIM(1st sig) DMARC ARC"),
    ("py-dkim", "DKIM"),
    ("py-arc", "ARC"),
    ("opendkim+opendmarc", "SPF DKIM DMARC"),
    ("opendkim", "DKIM"),
]


def checks(tool):
    return next((c for p, c in CHECKS if tool.startswith(p)), "?")


def summaries(res):
    tools = {}
    for p in glob.glob(os.path.join(res, "*.summary.json")):
        s = json.load(open(p))
        tools.setdefault(s["tool"], []).append(s)
    return tools


def med(xs):
    xs = [x for x in xs if x]
    return statistics.median(xs) if xs else None


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--kit", default=os.environ.get("BENCH_KIT", os.path.join(here, "..", "..", "..", "shared", "bench")))
    ap.add_argument("--ours", default="unspoof-warm")
    a = ap.parse_args()
    run = os.environ.get("BENCH_RUN", os.path.join(a.kit, "run"))
    tools = summaries(os.path.join(run, "results"))
    if a.ours not in tools:
        raise SystemExit(f"no summaries for {a.ours} in {run}/results")

    def figures(ss):
        cpu = med([s.get("msgs_per_cpu_s") for s in ss])
        srv = med([s["n"] / s["server_cpu_s"] if s.get("server_cpu_s") else None for s in ss])
        mps = med([s["msgs_per_s"] for s in ss])
        return mps, cpu, srv

    _, ours, _ = figures(tools[a.ours])
    print(f"ours = {a.ours}: {ours:.0f} msg/CPU-s (median of {len(tools[a.ours])} runs)\n")
    print("| tool | checks | n | runs | msg/s | msg/CPU-s | msg/srv-CPU-s | ours ÷ msg/CPU-s | ours ÷ srv |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    rows = []
    for t, ss in tools.items():
        mps, cpu, srv = figures(ss)
        rows.append((-(cpu or 0), t, ss[0]["n"], len(ss), mps, cpu, srv))
    fmt = lambda x: f"{x:.0f}" if x else "—"
    ratio = lambda t, x: "—" if t.startswith("unspoof") or not x else f"{ours / x:.1f}×"
    for _, t, n, runs, mps, cpu, srv in sorted(rows):
        print(f"| {t} | {checks(t)} | {n} | {runs} | {fmt(mps)} | {fmt(cpu)} | {fmt(srv)} "
              f"| {ratio(t, cpu)} | {ratio(t, srv)} |")


if __name__ == "__main__":
    main()
