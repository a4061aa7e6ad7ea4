"""The bench plot: speedup over our target-only and MAL, per workload and method.

One column per temperature, two rows (speedup, MAL); in each panel a group of bars per
workload, one bar per method. Rendered with matplotlib's Agg backend, so no display is needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

METRICS = (("speedup", "speedup vs our target-only"), ("mean_accepted_length", "MAL (tokens / target forward)"))


def _method_names(report: Mapping[str, Any]) -> list[str]:
    """Every method in the report, in first-seen order (ours first, as the runs list them)."""
    names: list[str] = []
    for w in report["workloads"].values():
        for run in w["runs"].values():
            names += [m for m in run["methods"] if m not in names]
    return names


def plot_workload_report(report: Mapping[str, Any], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # headless: CI and servers have no display
    import matplotlib.pyplot as plt

    workloads = list(report["workloads"])
    run_keys = list(dict.fromkeys(k for w in report["workloads"].values() for k in w["runs"]))
    methods = _method_names(report)
    width = 0.8 / max(1, len(methods))
    # the legend gets room of its own below the panels: with every proposer, the sweep and the
    # cascades it is 40-odd long names, which overlapped the panels in a fixed 6% strip
    ncol = min(len(methods), 6 if max(map(len, methods), default=0) <= 20 else 3)
    legend_in = 0.19 * -(-len(methods) // max(ncol, 1)) + 0.3
    height = 7 + legend_in
    fig, axes = plt.subplots(len(METRICS), len(run_keys), figsize=(4.5 * len(run_keys) + 1.5, height), squeeze=False)
    for col, rkey in enumerate(run_keys):
        for row, (metric, label) in enumerate(METRICS):
            ax = axes[row][col]
            for j, method in enumerate(methods):
                values = [
                    report["workloads"][w]["runs"].get(rkey, {}).get("methods", {}).get(method, {}).get(metric) or 0.0
                    for w in workloads
                ]
                xs = [i + (j - (len(methods) - 1) / 2) * width for i in range(len(workloads))]
                ax.bar(xs, values, width, label=method, hatch="//" if method.startswith("hf-") else None)
            ax.axhline(1.0, color="black", linewidth=0.8)
            ax.set_xticks(range(len(workloads)), workloads)
            ax.set_ylabel(label)
            ax.set_title(f"{label.split(' (')[0]}, {rkey}" + (" (greedy)" if rkey == "t=0" else ""))
            ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=ncol, frameon=False, fontsize="small")
    fig.tight_layout(rect=(0, legend_in / height, 1, 1))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
