"""The digest's chart: break-glass events per day, stacked by resource, with the events made
outside maintenance windows marked. matplotlib is imported here only, when a chart is drawn,
so the bot's processes do not carry it otherwise."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path


def draw_events_chart(
    days: Sequence[date],
    events: Mapping[str, Sequence[int]],
    outside: Sequence[int],
    path: Path,
    *,
    title: str = "Break-glass events per day",
) -> Path:
    """Write a PNG to `path`: `events[resource][i]` grants made on `days[i]`, stacked;
    `outside[i]` of them outside every maintenance window, marked above each bar."""
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only, never a screen
    from matplotlib import pyplot as plt
    from matplotlib.figure import Figure

    fig: Figure = plt.figure(figsize=(8, 3.6), dpi=100)
    try:
        ax = fig.add_subplot(1, 1, 1)
        x = list(range(len(days)))
        bottom = [0] * len(days)
        for resource in sorted(events):
            counts = list(events[resource])
            ax.bar(x, counts, bottom=bottom, label=resource, width=0.7)
            bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
        marked = [(i, bottom[i], n) for i, n in enumerate(outside) if n]
        if marked:
            ax.scatter(
                [i for i, _, _ in marked],
                [top + 0.15 for _, top, _ in marked],
                marker="v",
                color="crimson",
                label="outside maintenance windows",
                zorder=3,
            )
            for i, top, n in marked:
                ax.annotate(str(n), (i, top + 0.3), ha="center", color="crimson", fontsize=8)
        ax.set_xticks(x, [d.strftime("%a %d %b") for d in days], rotation=30, ha="right")
        ax.set_ylabel("grants made")
        ax.set_title(title)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.set_ylim(0, max([*bottom, 1]) + 1)
        if events or marked:
            ax.legend(loc="upper left", fontsize=8, frameon=False)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path
