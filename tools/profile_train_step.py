"""Sums an ncu --csv kernel-duration report (tools/profile_train_step.sh) by kernel: time, share, count,
in the order of the largest total first. Usage: python3 tools/profile_train_step.py REPORT.csv"""
import collections
import csv
import sys


def main(path):
    rows = []
    with open(path, newline="") as f:
        lines = [l for l in f if l.startswith('"')]  # ncu prints its own progress lines before the table
    for r in csv.DictReader(lines):
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        rows.append((r["Kernel Name"], r["Grid Size"], r["Block Size"], float(r["Metric Value"].replace(",", "")) / 1e3))
    if not rows:
        sys.exit(f"profile_train_step: no kernel durations in {path}")
    total = sum(r[3] for r in rows)
    by = collections.defaultdict(lambda: [0.0, 0])
    for name, grid, block, us in rows:
        key = (name[:70], grid)
        by[key][0] += us
        by[key][1] += 1
    print(f"STEP kernels={len(rows)} serial_gpu_ms={total / 1e3:.2f}")
    print(f"{'us total':>10} {'share':>6} {'count':>5} {'us each':>9}  kernel [grid]")
    for (name, grid), (us, n) in sorted(by.items(), key=lambda kv: -kv[1][0]):
        print(f"{us:10.1f} {100 * us / total:5.1f}% {n:5d} {us / n:9.1f}  {name} [{grid}]")


if __name__ == "__main__":
    main(sys.argv[1])
