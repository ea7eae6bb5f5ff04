#!/usr/bin/python3
"""Draws bench/scaling.png from the scaling rows of a bitzel-bench CSV.

    /usr/bin/python3 bench/plot.py bench/out/results.csv bench/scaling.png

Top: times (log-log), the worker's solid, the baselines measured in the
same run dashed. Bottom: the ratios worker / baseline (below 1: the
worker is faster). Needs Debian's python3-matplotlib.
"""

import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# metric -> (label, colour)
SERIES = {
    "setup cold": ("setup, cold", "tab:red"),
    "setup warm": ("setup, warm", "tab:blue"),
    "output upload": ("output upload (inputs passed through)", "tab:green"),
    "input upload": ("input upload (client)", "tab:purple"),
}
BASELINES = {
    "cp -a + fork/exec": "tab:red",
    "cp -al + fork/exec": "tab:blue",
    "sha256sum": "tab:green",
}
AXES = {
    "files": "input files (one tree, 100 per directory)",
    "layers": "layers in a bitzel.layers union (10,000 files in all)",
}


def load(path):
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if r["section"] == "scaling":
                rows.append(r)
    return rows


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "bench/out/results.csv"
    dst = sys.argv[2] if len(sys.argv) > 2 else "bench/scaling.png"
    rows = load(src)
    if not rows:
        sys.exit(f"{src}: no scaling rows")
    label = rows[0]["label"]
    fig, axes = plt.subplots(2, 2, figsize=(13, 9), sharex="col")
    for col, axis in enumerate(AXES):
        top, bottom = axes[0][col], axes[1][col]
        mine = [r for r in rows if r["workload"] == axis]
        ys = [float(r[k]) for r in mine for k in ("ours", "baseline_value") if float(r[k]) > 0]
        baselines_drawn = set()
        for metric, (name, colour) in SERIES.items():
            pts = sorted((int(r["x"]), float(r["ours"]), r["baseline"], float(r["baseline_value"]), float(r["ratio"]))
                         for r in mine if r["metric"] == metric)
            if not pts:
                continue
            xs = [p[0] for p in pts]
            top.plot(xs, [p[1] for p in pts], "o-", color=colour, label=f"{label}: {name}")
            bottom.plot(xs, [p[4] for p in pts], "o-", color=colour, label=f"{name} / {pts[0][2]}")
            base = pts[0][2]
            if base not in baselines_drawn:
                baselines_drawn.add(base)
                top.plot(xs, [p[3] for p in pts], "s--", color=BASELINES.get(base, "grey"), alpha=0.6,
                         label=f"baseline: {base}")
        top.set_xscale("log")
        top.set_yscale("log")
        if ys:
            # Room below the curves for the legend.
            top.set_ylim(min(ys) / 40, max(ys) * 2)
        top.set_ylabel("milliseconds (median)")
        top.set_title(AXES[axis])
        top.grid(True, which="both", alpha=0.3)
        top.legend(fontsize=7, loc="best", framealpha=0.8)
        bottom.set_xscale("log")
        bottom.set_yscale("log")
        bottom.axhline(1, color="black", linewidth=0.8)
        bottom.set_ylabel("ratio worker / baseline")
        bottom.set_xlabel(AXES[axis])
        bottom.grid(True, which="both", alpha=0.3)
        bottom.legend(fontsize=7, loc="best", framealpha=0.8)
        xs = sorted({int(r["x"]) for r in mine})
        bottom.set_xticks(xs)
        bottom.set_xticklabels([str(x) for x in xs])
    fig.suptitle("bitzel-bench scaling: setup and upload vs input size and layer count (baselines from the same run)")
    fig.tight_layout()
    fig.savefig(dst, dpi=110)
    print(f"wrote {dst}")


if __name__ == "__main__":
    main()
