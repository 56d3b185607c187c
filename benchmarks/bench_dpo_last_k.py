"""DPO training with the same trainable set on both sides: the top `last_k` blocks and the final norm (the LM
head is tied to the input embeddings, so it stays frozen with them). Both sides compute the reference
log-probs once before training (timed apart, not in the ratio); alignkit's reference pass also fills its
frozen-prefix cache (alignkit.prefix), so its training steps run the top blocks only, while TRL's DPOTrainer
runs its frozen blocks (`requires_grad=False`) at every step. One race per epoch count (1, 2, 4)
(bench_dpo.run: the same rows, token ids, batch, length, loss and optimizer on both sides).

    .venv/bin/python benchmarks/bench_dpo_last_k.py             # SmolLM2-135M, last 4 blocks
    .venv/bin/python benchmarks/bench_dpo_last_k.py --quick     # tiny random model
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_dpo  # noqa: E402
import common  # noqa: E402

run, main = common.by_epochs(bench_dpo.run, "dpo_last_k", __doc__)

if __name__ == "__main__":
    main()
