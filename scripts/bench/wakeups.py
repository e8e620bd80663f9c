#!/usr/bin/env python3
"""Who wakes the gateway's threads, and from where: the hand-offs between threads, from
`perf script` of a `perf record -e sched:sched_wakeup,sched:sched_switch --call-graph dwarf` of
`unspoof serve` (scripts/bench-gateway.sh PROFILE=wakeups). Each wake-up of a gateway thread
is counted by (woken thread, waking thread, how: a futex (a channel, a condvar, a notify), the
epoll of tokio's I/O driver, disk I/O done, a timer), with the first frames of the waker's own
code, which name the hand-off (`flume::Shared::send < ...ping` is a command to sqlx's SQLite
thread). With `-p PID` perf sees only wake-ups done while a gateway thread runs: those by the
load generator's packets or by interrupts elsewhere are not in it. Sleeps (a thread switched
out waiting, i.e. its voluntary context switches) are counted by thread too.

    perf script -i perf-gateway.data -F comm,tid,event,trace,ip,sym | wakeups.py [--msgs N] [--top K]
"""
import argparse
import collections
import re
import sys


def samples(f):
    cur = None
    for line in f:
        if not line.strip():
            continue
        if not line.startswith((" ", "\t")):
            m = re.match(r"(\S.*?)\s+(\d+)\s+(sched:\S+):\s+(.*)", line)
            if cur:
                yield cur
            cur = m and {"comm": m.group(1), "tid": int(m.group(2)), "event": m.group(3),
                         "trace": m.group(4), "stack": []}
        elif cur:
            parts = line.strip().split(None, 1)
            cur["stack"].append(parts[1] if len(parts) > 1 else "")
    if cur:
        yield cur


def how(stack):
    s = " ".join(stack)
    for key, name in (("ep_poll_callback", "epoll"), ("futex_wake", "futex"),
                      ("hrtimer", "timer"), ("end_io", "disk I/O"), ("blk_", "disk I/O")):
        if key in s:
            return name
    return "other"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--msgs", type=int, default=0, help="messages in the profile: per-message figures")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--frames", type=int, default=3, help="frames of ours (or sqlx's) shown")
    a = ap.parse_args()
    all_samples = list(samples(sys.stdin))
    threads = {s["tid"]: s["comm"] for s in all_samples}
    sleeps = collections.Counter(
        s["comm"] for s in all_samples
        if s["event"] == "sched:sched_switch" and re.search(r"prev_state=[SD]", s["trace"]))
    wakes = collections.Counter()
    for s in all_samples:
        if s["event"] != "sched:sched_wakeup":
            continue
        target = int(re.search(r"pid=(\d+)", s["trace"]).group(1))
        if target not in threads:
            continue  # not a gateway thread
        own = [re.sub(r"\s*\(inlined\)", "", f) for f in s["stack"] if "::" in f]
        # The first frames say how (a channel's send, a condvar), the first of ours or sqlx's
        # say which hand-off.
        named = [f for f in own[2:] if "sqlx" in f][:1] + [f for f in own[2:] if "unspoof" in f]
        where = " < ".join(f[:100] for f in own[:2] + named[:a.frames])
        wakes[(threads[target], s["comm"], how(s["stack"]), where)] += 1
    per = (lambda n: f"{n / a.msgs:.3f}/msg") if a.msgs else (lambda n: str(n))
    print("sleeps (voluntary switches) by thread: "
          + ", ".join(f"{t} {per(n)}" for t, n in sleeps.most_common()))
    print(f"\nwake-ups of gateway threads, top {a.top}: count, woken <- waker, how, waker's frames")
    for (target, waker, kind, where), n in wakes.most_common(a.top):
        print(f"{per(n):>12}  {target} <- {waker}, {kind}: {where}")


if __name__ == "__main__":
    main()
