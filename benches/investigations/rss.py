"""Run a command and sample its resident memory (VmRSS of the process and its children) while
it runs; print the peak and, with --csv, write every sample (seconds, MiB, rows done).

    .venv/bin/python benches/investigations/rss.py --csv /tmp/rss.csv --rows-log OUT/.extract -- \
        target/release/convrnn-serve extract --model models/rgc_fmnist.onnx --images ... --out OUT

--rows-log DIR counts the rows the extraction has recorded (its progress logs) at each sample,
so memory can be plotted against the stimuli processed. Standard library only.
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "suite"))
from load import rss_kib, status_kib  # noqa: E402,F401  (/proc readers, shared with the suite)


def rows_done(state_dir):
    n = 0
    for log in glob.glob(os.path.join(state_dir, "*.jsonl")):
        with open(log) as f:
            for line in f:
                if line.endswith("\n"):
                    n += len(json.loads(line)["rows"])
    return n


def sample(cmd, interval, rows_log=None, env=None, stdout=None):
    """Runs cmd (its standard output into the open file `stdout`, if given); returns (exit code,
    seconds, samples [(s, MiB, rows)], peak MiB)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=stdout)
    samples = []
    while proc.poll() is None:
        rows = rows_done(rows_log) if rows_log and os.path.isdir(rows_log) else None
        samples.append((time.perf_counter() - t0, rss_kib(proc.pid) / 1024, rows))
        time.sleep(interval)
    secs = time.perf_counter() - t0
    peak = max((s[1] for s in samples), default=0.0)
    return proc.returncode, secs, samples, peak


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--csv")
    ap.add_argument("--rows-log")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    rc, secs, samples, peak = sample(cmd, a.interval, a.rows_log)
    if a.csv:
        with open(a.csv, "w") as f:
            f.write("seconds,rss_mib,rows_done\n")
            for s, m, r in samples:
                f.write(f"{s:.2f},{m:.1f},{'' if r is None else r}\n")
    print(f"exit {rc}, {secs:.1f} s, {len(samples)} samples, peak RSS {peak:.1f} MiB", file=sys.stderr)
    sys.exit(rc)


if __name__ == "__main__":
    main()
