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


AXIS = {"loss": ("loss (nats)", "损失（nats）"), "accuracy": ("accuracy (share of pairs)", "准确率（样本对比例）"),
        "reward_accuracy": ("reward accuracy (share of pairs)", "奖励准确率（样本对比例）"),
        "reward_margin": ("implicit-reward margin (nats × β)", "隐式奖励间隔（nats × β）"),
        "rewards_chosen": ("implicit reward, chosen (nats × β)", "chosen 隐式奖励（nats × β）"),
        "rewards_rejected": ("implicit reward, rejected (nats × β)", "rejected 隐式奖励（nats × β）"),
        "logps_chosen": ("log-prob, chosen (nats)", "chosen 对数概率（nats）"),
        "logps_rejected": ("log-prob, rejected (nats)", "rejected 对数概率（nats）"),
        "logratio": ("mean log π/π_ref (nats)", "平均 log π/π_ref（nats）"),
        "lr": ("learning rate", "学习率")}
"""Axis labels (with units) of the TensorBoard scalars the chapters plot, by the tag's last part."""


def _tag_label(tag: str) -> str:
    split, name = tag.split("/", 1) if "/" in tag else ("", tag)
    en, zh = AXIS.get(name, (name, name))
    where = {"train": ("train", "训练"), "eval": ("held-out", "留出集")}.get(split, (split, split))
    return bilingual(f"{en}, {where[0]}" if where[0] else en, f"{zh}，{where[1]}" if where[1] else zh, sep="\n")


def training_curves(scalars: pd.DataFrame, tags=("train/loss", "train/accuracy", "eval/accuracy")):
    """One panel per tag, optimiser steps on x, the tag's quantity (with its unit) on y; train curves
    smoothed with a rolling mean (raw shown faintly)."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    set_theme()
    fig, axes = plt.subplots(1, len(tags), figsize=(2.8 * len(tags), 2.9))  # ~ the page width: text stays legible
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
        ax.set_title(_tag_label(tag), fontsize=9)
        ax.set_ylabel("")
        ax.set_xlabel(bilingual("optimiser step", "优化步"))
    fig.tight_layout()
    return fig


def drift_and_accuracy(metrics: dict, window: int = 5):
    """DPO's distance from its reference against its reward accuracy (chapter 4). Left: the mean
    sequence log-ratio log π/π_ref per optimiser step; right: reward accuracy against that log-ratio. Training
    batches (measured before their update, so on pairs not yet trained on in the first epoch) as rolling means
    over `window` steps, coloured by step; held-out evaluations as points with their 95% CIs."""
    import matplotlib.pyplot as plt
    set_theme()
    train = pd.DataFrame(metrics.get("train_history") or [])
    evals = [*(metrics.get("eval_history") or []), {"step": metrics.get("steps"), **(metrics.get("eval") or {})}]
    evals = pd.DataFrame([e for e in evals if "logratio" in e])
    fig, (left, right) = plt.subplots(1, 2, figsize=(8.4, 3.2))
    if "logratio" in train:
        smooth = train[["logratio", "reward_accuracy"]].rolling(window, min_periods=1).mean()
        left.plot(train.step, train.logratio, alpha=0.3, label=bilingual("train batch", "训练批次"))
        left.plot(train.step, smooth.logratio, label=bilingual(f"rolling mean of {window}", f"{window} 步滑动平均"))
        dots = right.scatter(smooth.logratio, smooth.reward_accuracy, c=train.step, cmap="viridis", s=14)
        fig.colorbar(dots, ax=right, label=bilingual("optimiser step", "优化步", sep="\n"))
    for _, e in evals.iterrows():
        xerr = [[e.logratio - e.logratio_ci95[0]], [e.logratio_ci95[1] - e.logratio]]
        yerr = [[e.reward_accuracy - e.reward_accuracy_ci95[0]], [e.reward_accuracy_ci95[1] - e.reward_accuracy]]
        left.errorbar([e.step], [e.logratio], yerr=xerr, fmt="o", c="C3", capsize=3)
        right.errorbar([e.logratio], [e.reward_accuracy], xerr=xerr, yerr=yerr, fmt="o", c="C3", capsize=3,
                       label=bilingual(f"held-out, step {int(e.step)}", f"留出集，第 {int(e.step)} 步"))
    left.axhline(0, ls="--", c="grey", lw=1)
    right.axhline(0.5, ls="--", c="grey", lw=1)
    left.set_xlabel(bilingual("optimiser step", "优化步"))
    left.set_ylabel(bilingual("mean log π/π_ref (nats)", "平均 log π/π_ref（nats）", sep="\n"))
    right.set_xlabel(bilingual("mean log π/π_ref (nats)", "平均 log π/π_ref（nats）"))
    right.set_ylabel(bilingual("reward accuracy", "奖励准确率", sep="\n"))
    for ax in (left, right):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def score_distributions(tables: dict[str, pd.DataFrame]):
    """Chosen vs rejected score densities, one panel per table (e.g. 'untrained · test')."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    set_theme()
    cols = 2 if len(tables) == 4 else len(tables)  # four panels as 2 x 2: readable in the page width
    rows = -(-len(tables) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.0 * rows), squeeze=False)
    for ax, (name, table) in zip(axes.flat, tables.items()):
        data = table.assign(side=table.side.map({"better": "chosen", "worse": "rejected"}))
        sns.histplot(data=data, x="score", hue="side", hue_order=["chosen", "rejected"], stat="density",
                     element="step", common_norm=False, ax=ax)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(bilingual("RM score (logit)", "奖励分数（logit）"))
        ax.set_ylabel(bilingual("density", "密度"))
    fig.tight_layout()
    return fig


def margin_and_length(pairs_by_name: dict[str, pd.DataFrame]):
    """Left: per-pair margin (chosen - rejected) histograms. Right: score vs response length."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    set_theme()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    margins = pd.concat([p.assign(model=name) for name, p in pairs_by_name.items()])
    sns.histplot(data=margins, x="margin", hue="model", element="step", stat="density", common_norm=False, ax=left)
    left.axvline(0, c="grey", ls="--", lw=1)
    left.set_title(bilingual("margin r(chosen) − r(rejected)", "分差"), fontsize=10)
    left.set_xlabel(bilingual("margin (RM score difference)", "分差（奖励分数之差）"))
    left.set_ylabel(bilingual("density", "密度"))
    long = pd.concat([pd.DataFrame({"tokens": pd.concat([p.tokens_better, p.tokens_worse]),
                                    "score": pd.concat([p.score_better, p.score_worse]), "model": name})
                      for name, p in pairs_by_name.items()])
    sns.scatterplot(data=long, x="tokens", y="score", hue="model", s=8, alpha=0.5, ax=right)
    right.set_title(bilingual("reward vs response length", "奖励与回答长度"), fontsize=10)
    right.set_xlabel(bilingual("response length (tokens)", "回答长度（token）"))
    right.set_ylabel(bilingual("RM score (logit)", "奖励分数（logit）"))
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- CJK labels

CJK_FONT_FILES = ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
                  "/usr/share/fonts/opentype/noto/NotoSansCJK-Medium.ttc",
                  "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc")
_cjk_family: list = []  # memo: [family or None] once probed


def cjk_font() -> str | None:
    """The family name of an installed CJK font (Debian `fonts-noto-cjk`), registered with matplotlib
    (its font cache may predate the install), or None. Figures use it only as a fallback after DejaVu Sans,
    so Latin text looks the same either way."""
    if _cjk_family:
        return _cjk_family[0]
    from matplotlib import font_manager

    def installed():
        known = {f.name for f in font_manager.fontManager.ttflist}
        return next((n for n in ("Noto Sans CJK SC", "Noto Sans CJK JP", "WenQuanYi Micro Hei",
                                 "WenQuanYi Zen Hei") if n in known), None)
    family = installed()
    for path in ([] if family else CJK_FONT_FILES):
        if Path(path).exists():
            font_manager.fontManager.addfont(path)  # registers every face of a .ttc
            family = installed() or font_manager.FontProperties(fname=path).get_name()
            break
    _cjk_family.append(family)
    return family


def bilingual(en: str, zh: str, sep: str = " / ") -> str:
    """'en / zh' when a CJK font can draw the Chinese, else 'en' alone (never tofu boxes)."""
    return f"{en}{sep}{zh}" if cjk_font() else en


def set_theme() -> None:
    """seaborn's whitegrid theme with the CJK font (if any) as a per-glyph fallback."""
    import seaborn as sns
    family = cjk_font()
    # matplotlib falls back glyph by glyph along font.family (not along the font.sans-serif alias list)
    sns.set_theme(style="whitegrid", rc={"font.family": ["sans-serif"] + ([family] if family else [])})


def accuracy_ci(table: pd.DataFrame, chance: float = 0.5):
    """Point + 95% CI per row of a table with columns accuracy, ci95 low, ci95 high (e.g.
    `alignkit.report.chapters.generalization`); rows without an interval are skipped. A dashed line marks chance."""
    import matplotlib.pyplot as plt
    set_theme()
    rows = table.dropna(subset=["ci95 low", "ci95 high"])
    rows = rows[rows["n"].notna()]
    fig, ax = plt.subplots(figsize=(7, 0.55 * len(rows) + 1.4))
    y = range(len(rows))
    acc = rows["accuracy"].astype(float)
    ax.errorbar(acc, list(y), xerr=[acc - rows["ci95 low"].astype(float), rows["ci95 high"].astype(float) - acc],
                fmt="o", capsize=4)
    ax.set_yticks(list(y), rows.index)
    ax.invert_yaxis()
    ax.axvline(chance, ls="--", c="grey", lw=1)
    ax.set_xlabel(bilingual("pairwise accuracy (95% CI)", "成对准确率（95% 置信区间）"))
    ax.set_title(bilingual("accuracy vs chance (dashed)", "准确率与随机水平（虚线）"))
    fig.tight_layout()
    return fig


def loss_shapes(shapes: pd.DataFrame):
    """Left: each preference loss against its margin; right: its slope (where it is 0 the loss stops
    pushing the margin). `shapes` as from `alignkit.report.evidence.loss_shapes`."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    set_theme()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    if shapes.empty:
        left.set_title("no loss functions available")
        return fig
    sns.lineplot(data=shapes, x="margin", y="value", hue="loss", ax=left)
    sns.lineplot(data=shapes, x="margin", y="slope", hue="loss", ax=right, legend=False)
    right.axhline(0, c="grey", ls="--", lw=1)
    # IPO's square grows without bound while the logistic losses flatten: a symmetric log scale shows both
    left.set_yscale("symlog", linthresh=0.1)
    left.set_ylim(bottom=0)
    right.set_yscale("symlog", linthresh=0.01)
    left.set_title(bilingual("loss vs margin", "损失与间隔"))
    right.set_title(bilingual("slope d loss / d margin", "斜率"))
    for ax in (left, right):
        ax.set_xlabel(bilingual("margin h", "间隔 h"))
        ax.set_ylabel("")
    left.legend(fontsize=8)
    fig.tight_layout()
    return fig


def generation_figures(table: pd.DataFrame) -> dict:
    """Base vs DPO generations judged by the RM (table: split, model, score, response_tokens):
    'scores' and 'lengths' (distributions per split), 'score_vs_length' (scatter + linear fit per model)."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    set_theme()
    splits = sorted(table.split.unique())
    figures = {}
    for key, column, label in (("scores", "score", bilingual("RM score (logit)", "奖励分数（logit）")),
                               ("lengths", "response_tokens", bilingual("response length (tokens)", "回答长度（token）"))):
        fig, axes = plt.subplots(1, len(splits), figsize=(4.4 * len(splits), 3.2), squeeze=False)
        for ax, split in zip(axes[0], splits):
            sns.histplot(data=table[table.split == split], x=column, hue="model", hue_order=["base", "dpo"],
                         stat="density", element="step", common_norm=False, ax=ax)
            ax.set_title(bilingual(f"{split} prompts", "测试提示" if split == "test" else "训练提示"), fontsize=10)
            ax.set_xlabel(label)
            ax.set_ylabel(bilingual("density", "密度"))
        fig.tight_layout()
        figures[key] = fig
    grid = sns.lmplot(data=table, x="response_tokens", y="score", hue="model", hue_order=["base", "dpo"],
                      col="split", col_order=splits, height=3.2, aspect=1.2, scatter_kws={"s": 10, "alpha": 0.5})
    grid.set_axis_labels(bilingual("response length (tokens)", "回答长度（token）", sep="\n"),
                         bilingual("RM score (logit)", "奖励分数（logit）", sep="\n"))
    grid.set_titles(bilingual("{col_name} prompts", "{col_name}", sep=" / "))
    figures["score_vs_length"] = grid.figure
    return figures


def reliability_diagram(calibration: dict):
    """Chapter 6's reliability diagram: per bin of predicted probability sigmoid(r_w − r_l) (both orientations
    of every held-out pair), the observed share of outcomes against the mean prediction, before temperature
    scaling and after (cross-fitted; fitted in-sample on the train sample). Marker area ~ the bin's count;
    the diagonal is perfect calibration. `calibration` is experiments/calibration/summary.json."""
    import matplotlib.pyplot as plt
    set_theme()
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    series = ((calibration["before"], bilingual("before (T = 1)", "缩放前")),
              (calibration["cross_fitted"], bilingual("cross-fitted T", "交叉拟合的 T")),
              (calibration["train_fit"], bilingual("T from the train sample", "训练样本拟合的 T")))
    for part, label in series:
        bins = pd.DataFrame(part["reliability"])
        if bins.empty:
            continue
        line, = ax.plot(bins.confidence, bins.frequency, marker="o", lw=1, label=f"{label} (ECE {part['ece']:.3f})")
        ax.scatter(bins.confidence, bins.frequency, s=8 + 200 * bins["count"] / bins["count"].sum(), alpha=0.3,
                   color=line.get_color())
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel(bilingual("predicted P(preferred) = σ(margin / T)", "预测概率 σ(分差 / T)"))
    ax.set_ylabel(bilingual("observed share preferred", "实际被偏好比例"))
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def debiasing_scatter(table: pd.DataFrame, slope: float):
    """Chapter 6's score against response length on held-out responses, before (left) and after (right)
    subtracting `slope` × tokens (the slope fitted on the training responses), each with its linear fit.
    `table` is a score table (one row per response: score, response_tokens)."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    set_theme()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharex=True)
    corrected = table.score - slope * table.response_tokens
    for ax, values, title in ((axes[0], table.score, bilingual("plain RM score", "原始分数")),
                              (axes[1], corrected, bilingual("length-corrected score", "长度校正后的分数"))):
        sns.regplot(x=table.response_tokens, y=values, ax=ax, scatter_kws={"s": 8, "alpha": 0.5}, ci=None)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(bilingual("response length (tokens)", "回答长度（token）"))
        ax.set_ylabel(bilingual("score (logit)", "分数（logit）"))
    fig.tight_layout()
    return fig


def reward_cost_scatter(table: pd.DataFrame):
    """Chapter 6's helpfulness against harm: reward r (x) and cost c (y) of every held-out response, coloured
    by PKU-SafeRLHF's per-response safety label. `table` is experiments/safety/responses.parquet (one row per
    response: split, r, c, is_safe). Up and left is less helpful and more harmful by the heads' reading."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    set_theme()
    safe, unsafe = bilingual("safe", "安全"), bilingual("unsafe", "不安全")
    test = table[table.split == "test"].assign(label=lambda t: t.is_safe.map({True: safe, False: unsafe}))
    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    sns.scatterplot(data=test, x="r", y="c", hue="label", palette={safe: "tab:green", unsafe: "tab:red"},
                    hue_order=[unsafe, safe], s=14, alpha=0.7, ax=ax)
    ax.set_xlabel(bilingual("reward r (helpfulness head, logit)", "奖励 r（有用性头，logit）", sep="\n"))
    ax.set_ylabel(bilingual("cost c (logit; higher = less safe)", "代价 c（logit；越高越不安全）", sep="\n"))
    ax.legend(title=None, fontsize=8)
    fig.tight_layout()
    return fig


def lambda_sweep(safety: dict):
    """Chapter 6's λ-sweep: agreement of r / s_r − λ·c / s_c with the helpfulness and the safety label on the
    held-out pairs as λ grows (Wilson 95% CI bands), chance dashed. `safety` is
    experiments/safety/summary.json. The λ values of the grid are evenly spaced on the x axis."""
    import matplotlib.pyplot as plt
    set_theme()
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    lam = [row["lambda"] for row in safety["sweep"]]
    x = list(range(len(lam)))
    for key, label in (("helpfulness", bilingual("helpfulness label", "有用性标签")),
                       ("safety", bilingual("safety label", "安全性标签"))):
        acc = [row[key]["accuracy"] for row in safety["sweep"]]
        low, high = ([row[key]["ci95"][i] for row in safety["sweep"]] for i in (0, 1))
        line, = ax.plot(x, acc, marker="o", label=label)
        ax.fill_between(x, low, high, alpha=0.2, color=line.get_color())
    ax.axhline(0.5, ls="--", c="grey", lw=1)
    ax.set_xticks(x, [f"{v:g}" for v in lam])
    ax.set_xlabel(bilingual("λ in r/s_r − λ·c/s_c (cost weight)", "λ（代价权重）", sep="\n"))
    ax.set_ylabel(bilingual("agreement (share of pairs)", "一致率（样本对比例）", sep="\n"))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def best_of_n_curves(bon: dict):
    """Chapter 6's over-optimisation curves: left, the gain over a random sample (n = 1) of the response the
    reward model (the proxy) picks among n, by the proxy, by the judge (helpfulness head) and by the cost head,
    each in standard deviations of that scorer over all samples, against KL_BoN = log n − (n − 1)/n (bands:
    bootstrap 95% CIs over prompts); right, the picked response's length. `bon` is
    experiments/bon/summary.json."""
    import matplotlib.pyplot as plt
    set_theme()
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.8))
    curves, scales = bon["curves"], bon["scales"]
    kl = [row["kl_bon"] for row in curves["judge"]]
    series = ((curves["judge"], "proxy", scales["proxy"], bilingual("proxy: reward model", "代理：奖励模型")),
              (curves["judge"], "judge", scales["judge"], bilingual("judge: helpfulness head", "评判器：有用性头")),
              (curves["cost"], "judge", scales["cost"], bilingual("cost head (harm)", "代价头（有害）")))
    for rows, key, scale, label in series:
        scale = scale or 1.0
        gain = [row[f"{key}_gain"] / scale for row in rows]
        low, high = ([row[f"{key}_gain_ci95"][i] / scale for row in rows] for i in (0, 1))
        line, = axes[0].plot(kl, gain, marker="o", label=label)
        axes[0].fill_between(kl, low, high, alpha=0.2, color=line.get_color())
    axes[0].axhline(0, ls="--", c="grey", lw=1)
    axes[0].set_ylabel(bilingual("gain over n = 1 (standard deviations)", "相对 n = 1 的提升（标准差）",
                                 sep="\n"))
    axes[0].legend(fontsize=8)
    tokens = curves["tokens"]
    line, = axes[1].plot(kl, [row["judge"] for row in tokens], marker="o", color="tab:purple")
    axes[1].fill_between(kl, [row["judge_ci95"][0] for row in tokens],
                         [row["judge_ci95"][1] for row in tokens], alpha=0.2, color=line.get_color())
    axes[1].axhline(bon["decoding"]["max_new_tokens"], ls=":", c="grey", lw=1)  # the token cap
    axes[1].set_ylabel(bilingual("picked response length (tokens)", "所选回答长度（token）", sep="\n"))
    for ax in axes:
        ax.set_xlabel(bilingual("KL_BoN = log n − (n − 1)/n (nats)", "KL_BoN（nats）", sep="\n"))
        top = ax.secondary_xaxis("top")
        top.set_xticks(kl, [str(row["n"]) for row in tokens])
        top.set_xlabel("n", fontsize=8)
    fig.tight_layout()
    return fig

