#!/usr/bin/env python3
"""Prints the table of examples/selective/run.sh: summary.py OUT METHOD..."""
import json, math, os, re, struct, sys


def last_eval(path):
    loss = acc = None
    for line in open(path):
        r = json.loads(line)
        if "eval_loss" in r:
            loss = r["eval_loss"]
        if "eval_accuracy" in r:
            acc = r["eval_accuracy"]
    return loss, acc


def saved(d):
    """The saved tensors' file, its size, and the entries it changes: the
    indices of a sparse delta, every value of anything else."""
    for f in ("adapter_model.safetensors", "model.safetensors"):
        p = os.path.join(d, f)
        if os.path.exists(p):
            break
    with open(p, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        hdr = json.loads(fh.read(n))
    entries = 0
    for name, t in hdr.items():
        if name == "__metadata__" or name.endswith((".delta_base", ".delta_shape", ".delta_values")):
            continue
        entries += math.prod(t["shape"])
    return entries, os.path.getsize(p)


def timing(path):
    s = open(path).read()
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", s).group(1)
    sec = 0.0
    for part in wall.split(":"):
        sec = sec * 60 + float(part)
    cpu = float(re.search(r"User time \(seconds\): (\S+)", s).group(1)) + float(re.search(r"System time \(seconds\): (\S+)", s).group(1))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", s).group(1))
    return sec, cpu, rss / 1024


out, methods = sys.argv[1], sys.argv[2:]
print("| method | entries changed (Shakespeare) | saved file | held-out loss, perplexity | SST-2 dev accuracy | CPU s (Shakespeare + SST-2) | wall s | peak RSS MiB |")
print("|---|---:|---:|---|---:|---:|---:|---:|")
for m in methods:
    sh, ss = os.path.join(out, "shakespeare-" + m), os.path.join(out, "sst2-" + m)
    loss, _ = last_eval(os.path.join(sh, "metrics.jsonl"))
    m2 = re.search(r"accuracy \S+ → (\S+)", open(ss + ".log").read())
    acc = float(m2.group(1)) if m2 else None
    entries, size = saved(sh)
    w1, c1, r1 = timing(sh + ".time")
    w2, c2, r2 = timing(ss + ".time")
    ppl = f"{loss:.4f}, {math.exp(loss):.2f}" if loss is not None else "—"
    a = f"{acc:.4f}" if acc is not None else "—"
    print(f"| {m} | {entries:,} | {size/1024:.1f} KiB | {ppl} | {a} | {c1:.0f} + {c2:.0f} | {w1:.0f} + {w2:.0f} | {r1:.0f} / {r2:.0f} |")
