#!/usr/bin/env python3
"""Run `unspoof analyze --batch` over the bench kit's corpus and write its results in the
kit's format, beside the peers' (run/results/).

Two tools, each run REPEAT times (summaries unspoof.rK.summary.json and
unspoof-warm.rK.summary.json, as run_all.sh keeps the peers'):

  unspoof       one whole process over the manifest: start-up, reading every file, a cold
                DNS cache, verification, writing one JSON line per message. CPU is the
                process's user+sys from wait4() (all its threads), wall from spawn to exit.
  unspoof-warm  one process over the manifest listed three times in a row. The figures cover
                the second pass only, between the moment its first result line arrives on
                stdout (pass 1 done) and the moment its last does: by then every DNS answer
                is in the process's caches, and the files were read at start-up, like the
                peers' pre-loaded messages. CPU is the sum of the process's threads'
                run time (/proc/PID/task/*/schedstat, ns) at both moments.

results/unspoof.jsonl and results/unspoof-warm.jsonl hold only the kit's six fields
(file, dkim, dkim_pass_d, spf, dmarc, arc); the full analysis of the first cold run is kept
in run/unspoof/analysis.jsonl for investigation. Standard library only; uses the kit's
runners/common.py so that summaries have the runners' shape.

  python3 run_unspoof.py --kit ../shared/bench --bin target/release/unspoof [--repeat 3] [-n N]
"""
import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import time
import types

FIELDS = ("file", "dkim", "dkim_pass_d", "spf", "dmarc", "arc")


def task_cpu_ns(pid):
    """Run time of every thread of `pid` (ns, precise), and user+sys from /proc/PID/stat (s)."""
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    with open(f"/proc/{pid}/stat") as f:
        st = f.read()
    fl = st[st.rindex(")") + 2:].split()
    ticks = (int(fl[11]) + int(fl[12])) / os.sysconf("SC_CLK_TCK")
    return total, ticks


def load_rows(data, limit):
    rows = []
    with open(os.path.join(data, "manifest.jsonl")) as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
                if limit and len(rows) >= limit:
                    break
    return rows


def write_manifest(path, rows, data, passes):
    """The manifest with absolute file names (so it can live outside the data folder)."""
    with open(path, "w") as f:
        for _ in range(passes):
            for r in rows:
                e = dict(r)
                e["file"] = os.path.join(data, r["file"])
                e.pop("expect", None)
                f.write(json.dumps(e) + "\n")


def command(args, manifest):
    cmd = [args.bin, "analyze", "--batch", manifest, "--resolver", args.resolver]
    if args.policy:
        cmd += ["--policy", args.policy]
    netns = os.environ.get("BENCH_NETNS", "mailbench")
    if netns:
        cmd = ["ip", "netns", "exec", netns] + cmd
    return cmd


def kit_line(line, data):
    """A result line of ours -> the kit's six fields, file relative to the data folder."""
    r = json.loads(line)
    out = {k: r.get(k) for k in FIELDS}
    f = out["file"]
    if f.startswith(data + os.sep):
        out["file"] = f[len(data) + 1:]
    return out


def check_exit(status, what):
    code = os.waitstatus_to_exitcode(status)
    # 0-3 are verdicts (accept, tag, quarantine, reject); anything else is a failure.
    if code < 0 or code > 3:
        sys.exit(f"unspoof failed ({what}): exit {code}")
    return code


def save(common, tool, rows, results, meter, extra, k):
    with contextlib.redirect_stdout(io.StringIO()):
        summ = common.finish(tool, rows, results, meter, extra)
    res = os.path.join(common.RUN, "results")
    os.replace(os.path.join(res, tool + ".summary.json"), os.path.join(res, f"{tool}.r{k}.summary.json"))
    agree = summ["agree_with_expected"]
    print(f"{tool:26s} run {k}: {summ['msgs_per_s']:9.1f} msg/s  cpu {summ['client_cpu_s']:.3f}s "
          f"-> {summ['msgs_per_cpu_s']} msg/cpu-s  dns cpu {summ['dns_cpu_s']:.3f}s  "
          f"agree {' '.join(f'{a}={b}' for a, b in agree.items())}", flush=True)
    return summ


def run_cold(args, common, rows, manifest, k, keep_analysis):
    knot = [p for p in [common.read_pid("knotd.pid")] if p]
    d0 = common.proc_cpu(knot)
    t0 = time.perf_counter()
    p = subprocess.Popen(command(args, manifest), stdout=subprocess.PIPE, bufsize=1 << 20)
    results = []
    keep = open(os.path.join(args.work, "analysis.jsonl"), "w") if keep_analysis else None
    for line in p.stdout:
        results.append(kit_line(line, args.data))
        if keep:
            keep.write(line.decode())
    if keep:
        keep.close()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    code = check_exit(status, "cold run")
    meter = types.SimpleNamespace(wall=wall, cpu=ru.ru_utime + ru.ru_stime, server_cpu=0.0,
                                  dns_cpu=common.proc_cpu(knot) - d0)
    if len(results) != len(rows) or any(r["file"] != m["file"] for r, m in zip(results, rows)):
        sys.exit("unspoof's output does not follow the manifest")
    extra = dict(timing="whole process: start-up, reading files, cold DNS cache, JSON output",
                 user_s=round(ru.ru_utime, 3), sys_s=round(ru.ru_stime, 3),
                 max_rss_kb=ru.ru_maxrss, exit_code=code)
    return save(common, "unspoof", rows, results, meter, extra, k)


def run_warm(args, common, rows, manifest, k):
    n = len(rows)
    knot = [p for p in [common.read_pid("knotd.pid")] if p]
    p = subprocess.Popen(command(args, manifest), stdout=subprocess.PIPE, bufsize=1 << 20)
    marks = {}
    passes = [[], [], []]
    i = 0
    for line in p.stdout:
        if i == n or i == 2 * n:  # first line of pass 2 / pass 3 has arrived
            cpu, ticks = task_cpu_ns(p.pid)
            marks[i] = (time.perf_counter(), cpu, ticks, common.proc_cpu(knot))
        passes[i // n].append(kit_line(line, args.data))
        i += 1
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    check_exit(status, "warm run")
    if i != 3 * n or len(marks) != 2:
        sys.exit(f"warm run: expected {3 * n} result lines, got {i}")
    (t1, c1, k1, d1), (t2, c2, k2, d2) = marks[n], marks[2 * n]
    # Lines n..2n-1 arrived between the marks, so the window is pass 2 shifted by one line;
    # the results reported are pass 2's.
    meter = types.SimpleNamespace(wall=t2 - t1, cpu=(c2 - c1) / 1e9, server_cpu=0.0, dns_cpu=d2 - d1)
    same = sum(a == b for a, b in zip(passes[0], passes[1]))
    extra = dict(timing="pass 2 of 3 over the same messages in one process: warm DNS caches, "
                        "files pre-loaded, JSON output included",
                 cpu_ticks_s=round(k2 - k1, 2), whole_process_cpu_s=round(ru.ru_utime + ru.ru_stime, 3),
                 pass1_equals_pass2=f"{same}/{n}", max_rss_kb=ru.ru_maxrss)
    return save(common, "unspoof-warm", rows, passes[1], meter, extra, k)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kit", default=os.environ.get("BENCH_KIT", os.path.join(here, "..", "..", "..", "shared", "bench")))
    ap.add_argument("--bin", default=os.path.join(here, "..", "..", "target", "release", "unspoof"))
    ap.add_argument("--repeat", type=int, default=int(os.environ.get("REPEAT", "3")))
    ap.add_argument("-n", type=int, default=None, help="first N messages of the manifest (default: all)")
    ap.add_argument("--resolver", default=f"127.0.0.1:{os.environ.get('BENCH_DNS_PORT', '5300')}")
    ap.add_argument("--policy", default=None, help="unspoof.toml to pass with --policy")
    ap.add_argument("--no-warm", action="store_true")
    args = ap.parse_args()
    args.kit = os.path.abspath(args.kit)
    args.bin = os.path.abspath(args.bin)
    sys.path.insert(0, os.path.join(args.kit, "runners"))
    import common  # the kit's: DATA, RUN, finish(), proc_cpu(), read_pid()
    args.data = os.path.abspath(common.DATA)
    args.work = os.path.join(common.RUN, "unspoof")
    os.makedirs(args.work, exist_ok=True)
    rows = load_rows(args.data, args.n)
    cold = os.path.join(args.work, "manifest.jsonl")
    warm = os.path.join(args.work, "manifest-x3.jsonl")
    write_manifest(cold, rows, args.data, 1)
    write_manifest(warm, rows, args.data, 3)
    for k in range(1, args.repeat + 1):
        run_cold(args, common, rows, cold, k, keep_analysis=(k == 1))
        if not args.no_warm:
            run_warm(args, common, rows, warm, k)


if __name__ == "__main__":
    main()
