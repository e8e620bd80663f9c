#!/usr/bin/env python3
"""Where a gateway's CPU went, from `perf script` of a `perf record --call-graph dwarf` of
`unspoof serve` (scripts/bench-gateway.sh PROFILE=1): each sample goes to one part by the
frames on its stack, outermost claim first, and separately counts as kernel time when its
innermost frame is in the kernel.

    perf script --no-inline -i perf-gateway.data -F comm,tid,ip,sym,dso | perf_split.py [--cpu-us U]

Parts, by the frames on the stack (the DWARF unwinder stops at the first async frame it cannot
step through, so a stack often ends inside the engine's futures; the crates on it still say
whose work it is): engine (the engine and the crates only it uses: mail-auth, mail-parser,
ring, hickory, the message and auth crates, the DNS view), store (the store crate, sqlx,
SQLite, the CLI's store adapter, the store's threads), gateway own (everything else: SMTP
reading and writing, the relay, the Received field, the session log, metrics, tokio,
allocation). Kernel: the innermost frame is in the kernel. `--cpu-us` (the gateway's CPU per
message in the profiled phase) turns shares into µs per message.
"""
import argparse
import collections
import re
import sys

ENGINE = re.compile(r"unspoof_engine|EngineDecider|mail_auth|mail_parser|ring_core|ring::|"
                    r"hickory|unspoof_auth|unspoof_dns|unspoof_message|unspoof_signature|psl::|"
                    r"idna|rsa::|ed25519|curve25519")
STORE = re.compile(r"unspoof_store|sqlx|sqlite3|libsqlite|store_adapter|GatewayStore")
STORE_THREADS = re.compile(r"sqlx-sqlite|journal|unspoof-store")


def samples(f):
    head, frames = None, []
    for line in f:
        line = line.rstrip("\n")
        if not line.strip():
            if head is not None:
                yield head, frames
            head, frames = None, []
        elif head is None:
            head = line
        else:
            parts = line.strip().split(None, 1)
            frames.append(parts[1] if len(parts) > 1 else "")
    if head is not None:
        yield head, frames


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpu-us", type=float, default=0.0)
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    parts = collections.Counter()
    kernel = collections.Counter()
    own_leaf = collections.Counter()
    own_fn = collections.Counter()
    threads = collections.Counter()
    total = 0
    for head, frames in samples(sys.stdin):
        total += 1
        comm = head.split()[0]
        threads[comm] += 1
        text = "\n".join(frames)
        if ENGINE.search(text):
            part = "engine"
        elif STORE.search(text) or STORE_THREADS.search(comm):
            part = "store"
        else:
            part = "gateway own"
            own_leaf[strip(frames[0]) if frames else "?"] += 1
            own_fn[next((strip(f) for f in frames if "unspoof_gateway" in f), "(no gateway frame)")] += 1
        parts[part] += 1
        leaf = frames[0] if frames else ""
        if "[kernel" in leaf:
            kernel[part] += 1
    if not total:
        print("no samples")
        return
    print(f"{total} samples")
    print("\n| part | share | of which in the kernel | µs/msg |")
    print("|---|---:|---:|---:|")
    for p in ("engine", "store", "gateway own"):
        us = f"{a.cpu_us * parts[p] / total:.0f}" if a.cpu_us else ""
        print(f"| {p} | {100 * parts[p] / total:.1f} % | {100 * kernel[p] / total:.1f} % | {us} |")
    k = sum(kernel.values())
    print(f"| (kernel, all parts) | {100 * k / total:.1f} % | | "
          f"{a.cpu_us * k / total:.0f} |" if a.cpu_us else f"| (kernel) | {100 * k / total:.1f} % | | |")
    print("\nthreads: " + ", ".join(f"{c} {100 * n / total:.1f} %" for c, n in threads.most_common(8)))
    print("\ngateway own, by the innermost gateway function on the stack:")
    for s, n in own_fn.most_common(a.top):
        print(f"  {100 * n / total:5.1f} %  {s[:140]}")
    print("\ngateway own, innermost frames:")
    for s, n in own_leaf.most_common(a.top):
        print(f"  {100 * n / total:5.1f} %  {s[:140]}")


def strip(frame):
    """The symbol of a `perf script` frame, without its DSO."""
    return re.sub(r" \([^()]*\)$", "", frame)


if __name__ == "__main__":
    main()
