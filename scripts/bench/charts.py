"""Draw the benchmark charts from one run's results.json (written by scripts/bench).

    python charts.py docs/bench/results.json docs/bench

The bench runs this with matplotlib in a throw-away environment (uv run --with matplotlib).
Each chart shows medians as bars and p99 as a tick above them.
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = ["#2b6cb0", "#dd6b20", "#718096", "#38a169"]


def bars(ax, groups, methods, values, p99s, unit, log=False):
    """Grouped bars: one group per case, one bar per method; p99 drawn as a black tick."""
    n = len(methods)
    width = 0.8 / n
    for j, method in enumerate(methods):
        xs = [i + (j - (n - 1) / 2) * width for i in range(len(groups))]
        ax.bar(xs, values[j], width, label=method, color=COLORS[j % len(COLORS)])
        ax.scatter(xs, p99s[j], marker="_", s=200, color="black", zorder=3)
        for x, v in zip(xs, values[j]):
            ax.annotate(f"{v:.0f}" if v >= 10 else f"{v:.1f}", (x, v), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups)
    ax.set_ylabel(unit)
    top = max(max(row) for row in p99s + values)
    # Head room above the tallest p99 for the legend, which spans the top.
    if log:
        ax.set_yscale("log")
        ax.set_ylim(top=top * 8)
    else:
        ax.set_ylim(0, top * 1.45)
    ax.legend(fontsize=7, loc="upper center", ncol=n)
    ax.grid(axis="y", alpha=0.3)


def create_chart(res, out):
    cases = res.get("create") or []
    if not cases:
        return
    methods = [m["name"] for m in cases[0]["methods"]]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    vals = [[c["methods"][j]["summary"]["median_ms"] / 1000 for c in cases] for j in range(len(methods))]
    p99 = [[c["methods"][j]["summary"]["p99_ms"] / 1000 for c in cases] for j in range(len(methods))]
    bars(ax, [c["label"] for c in cases], methods, vals, p99, "seconds, log scale (bar p50, tick p99)", log=True)
    ax.set_title("Create with a warm cache")
    fig.tight_layout()
    fig.savefig(out / "create.png", dpi=110)
    plt.close(fig)


def run_chart(res, out):
    cases = res.get("run") or []
    if not cases:
        return
    fig, axes = plt.subplots(1, len(cases), figsize=(5.5 * len(cases), 4.5))
    if len(cases) == 1:
        axes = [axes]
    for ax, c in zip(axes, cases):
        methods = [m["name"] for m in c["methods"]]
        vals = [[m["summary"]["median_ms"]] for m in c["methods"]]
        p99 = [[m["summary"]["p99_ms"]] for m in c["methods"]]
        bars(ax, [c["label"]], methods, vals, p99, "ms (bar p50, tick p99)")
        ax.legend(fontsize=7, loc="upper center", ncol=2)
    fig.suptitle("Run latency")
    fig.tight_layout()
    fig.savefig(out / "run.png", dpi=110)
    plt.close(fig)


def concurrency_chart(res, out):
    c = res.get("concurrency")
    if not c or not c.get("runs"):
        return
    runs = c["runs"]
    clients = [r["clients"] for r in runs]
    fig, ax1 = plt.subplots(figsize=(8, 4.5))
    ax1.plot(clients, [r["rps"] for r in runs], "o-", color=COLORS[0], label="runs/s")
    cpus = res["meta"]["cpus"]
    ceiling = []
    for r in runs:
        cpu = r.get("cpu") or {}
        per = sum(cpu.get(k, 0) for k in ("controlplane_cpu_ms_per_request", "agent_cpu_ms_per_request",
                                            "python_cpu_ms_per_request", "loadgen_cpu_ms_per_request"))
        ceiling.append(cpus * 1000 / per if per else float("nan"))
    ax1.plot(clients, ceiling, "--", color=COLORS[3],
             label="runs/s the cores allow (CPU per run; host to itself)")
    ax1.set_xscale("log", base=2)
    ax1.set_xticks(clients)
    ax1.set_xticklabels([str(x) for x in clients])
    ax1.set_xlabel("concurrent clients")
    ax1.set_ylabel("runs per second", color=COLORS[0])
    ax1.set_ylim(bottom=0, top=max([r["rps"] for r in runs] + [c for c in ceiling if c == c]) * 1.25)
    ax2 = ax1.twinx()
    ax2.plot(clients, [r["latency"]["p99_ms"] for r in runs], "s--", color=COLORS[1], label="p99 ms")
    ax2.plot(clients, [r["latency"]["median_ms"] for r in runs], "^:", color=COLORS[2], label="p50 ms")
    ax2.set_ylabel("latency, ms (log scale)", color=COLORS[1])
    ax2.set_yscale("log")
    lines = ax1.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax1.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="upper left")
    errors = sum(r["errors"] for r in runs)
    ax1.set_title(f"Trivial runs over {c['envs']} environments ({errors} errors)")
    ax1.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "concurrency.png", dpi=110)
    plt.close(fig)


def read_chart(res, out):
    r = res.get("read")
    if not r or not r.get("endpoints"):
        return
    eps = r["endpoints"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    names = [e["name"].replace(" (", "\n(") for e in eps]
    ax1.barh(names, [e["rps"] for e in eps], color=COLORS[0])
    ax1.set_xlabel("requests per second")
    ax1.invert_yaxis()
    y = range(len(eps))
    ax2.barh([i - 0.2 for i in y], [e["latency"]["median_ms"] for e in eps], 0.4, label="p50", color=COLORS[2])
    ax2.barh([i + 0.2 for i in y], [e["latency"]["p99_ms"] for e in eps], 0.4, label="p99", color=COLORS[1])
    ax2.set_yticks(list(y))
    ax2.set_yticklabels([])
    ax2.invert_yaxis()
    ax2.set_xlabel("ms")
    ax2.legend(fontsize=8)
    fig.suptitle(f"Read path, {r['envs']} environments recorded, {eps[0]['clients']} clients")
    fig.tight_layout()
    fig.savefig(out / "read.png", dpi=110)
    plt.close(fig)


def disk_chart(res, out):
    d = res.get("disk")
    if not d or not d.get("points"):
        return
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, mode in enumerate(["hardlink", "copy"]):
        pts = [p for p in d["points"] if p["mode"] == mode]
        if not pts:
            continue
        ax.plot([p["envs"] for p in pts], [p["bytes"] / 2**20 for p in pts], "o-", color=COLORS[i], label=mode)
        for p in pts:
            ax.annotate(f"{p['bytes'] / 2**20:,.0f} MiB", (p["envs"], p["bytes"] / 2**20), fontsize=7,
                        textcoords="offset points", xytext=(4, 4))
    steps = sorted({p["envs"] for p in d["points"]})
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(steps)
    ax.set_xticklabels([str(x) for x in steps])
    ax.set_xlabel("numpy + pandas environments")
    ax.set_ylabel("MiB (environments + cache, each inode once)")
    ax.set_title("Disk: hardlinks against copies")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "disk.png", dpi=110)
    plt.close(fig)


def main():
    res = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    for chart in (create_chart, run_chart, concurrency_chart, read_chart, disk_chart):
        chart(res, out)


if __name__ == "__main__":
    main()
