"""Delivery p50 and p99 against offered load, one colour per target, from the
results.json that bench/report.py wrote.  Usage: plot.py RESULTS_JSON OUT_PNG
"""

import json
import sys

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the backend

LABELS = {
    "embedded": "chatback embedded",
    "pg": "chatback Redis + PostgreSQL",
    "floor": "uWS floor",
    "socketio": "Socket.IO 4 + redis-adapter",
}


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: plot.py RESULTS_JSON OUT_PNG")
    with open(sys.argv[1], encoding="utf-8") as f:
        results = json.load(f)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for i, (target, label) in enumerate(LABELS.items()):
        steps = sorted((r for r in results["ladder"] if r["target"] == target), key=lambda r: r["offered"])
        if not steps:
            continue
        x = [r["offered"] for r in steps]
        color = f"C{i}"
        ax.plot(x, [r["delivery"]["p99"] for r in steps], "o-", color=color, label=f"{label} p99")
        ax.plot(x, [r["delivery"]["p50"] for r in steps], "s--", color=color, label=f"{label} p50")
    ax.set_xscale("log")
    ax.set_yscale("log")
    offered = sorted({r["offered"] for r in results["ladder"]})
    ax.set_xticks(offered, [f"{o / 1000:g}k" for o in offered])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("offered load, deliveries/s")
    ax.set_ylabel("delivery latency, ms (scheduled send → receipt)")
    title = "Delivery latency vs offered load"
    if results["run"].get("quick") == "1":
        title += " (SMOKE RUN)"
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(sys.argv[2])


if __name__ == "__main__":
    main()
