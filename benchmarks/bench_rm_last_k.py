"""Reward-model training with the same trainable set on both sides: the top `last_k` blocks, final norm and
score head. alignkit keeps the frozen blocks' output (alignkit.prefix, a fresh cache per repeat, filled in its
first epoch); TRL's RewardTrainer runs its frozen blocks (`requires_grad=False`) at every step. One race per
epoch count (1, 2, 4): each repeat trains that many epochs over its rows (bench_rm.run; the same rows, token
ids, batch, length and optimizer on both sides).

    .venv/bin/python benchmarks/bench_rm_last_k.py              # SmolLM2-135M, last 4 blocks
    .venv/bin/python benchmarks/bench_rm_last_k.py --quick      # tiny random model
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_rm  # noqa: E402
import common  # noqa: E402

run, main = common.by_epochs(bench_rm.run, "rm_last_k", __doc__)

if __name__ == "__main__":
    main()
