"""Figures for the notebooks (seaborn), and the readers that feed them."""
from __future__ import annotations

from pathlib import Path

import pandas as pd


def read_scalars(tensorboard_dir: str | Path) -> pd.DataFrame:
    """All scalars in a TensorBoard folder -> DataFrame(tag, step, value), last write per (tag, step) wins
    (a resumed run rewrites the steps after its checkpoint)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    rows = []
    for events in sorted(Path(tensorboard_dir).glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            rows += [(tag, e.step, e.value, e.wall_time) for e in acc.Scalars(tag)]
    frame = pd.DataFrame(rows, columns=["tag", "step", "value", "wall_time"])
    return frame.sort_values("wall_time").drop_duplicates(["tag", "step"], keep="last").drop(columns="wall_time")


def training_curves(scalars: pd.DataFrame, tags=("train/loss", "train/accuracy", "eval/accuracy")):
    """One panel per tag, steps on x; train curves smoothed with a rolling mean (raw shown faintly)."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    sns.set_theme(style="whitegrid")
    fig, axes = plt.subplots(1, len(tags), figsize=(4.2 * len(tags), 3.2))
    for ax, tag in zip(axes, tags):
        data = scalars[scalars.tag == tag].sort_values("step")
        if data.empty:
            ax.set_title(f"{tag} (no data)")
            continue
        sns.lineplot(data=data, x="step", y="value", ax=ax, alpha=0.3 if tag.startswith("train") else 1,
                     marker=None if tag.startswith("train") else "o")
        if tag.startswith("train") and len(data) > 10:
            smooth = data.assign(value=data.value.rolling(10, min_periods=1).mean())
            sns.lineplot(data=smooth, x="step", y="value", ax=ax)
        if tag.endswith("accuracy"):
            ax.axhline(0.5, ls="--", c="grey", lw=1)
        ax.set_title(tag)
        ax.set_ylabel("")
    fig.tight_layout()
    return fig
