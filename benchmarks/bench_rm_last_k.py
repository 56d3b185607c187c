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

EPOCHS = (1, 2, 4)
LAST_K = 4


def run(quick: bool = False, repeats: int = 3, *, epochs: tuple[int, ...] = EPOCHS, last_k: int = LAST_K,
        n_rows: int | None = None, **kwargs) -> dict:
    """bench_rm.run with `trainable='last_k'` at each epoch count; the result of the longest, with every
    count's ratio under `by_epochs`."""
    return common.by_epochs(lambda e: bench_rm.run(quick, repeats, trainable="last_k", last_k=1 if quick else last_k,
                                                   epochs=e, n_rows=n_rows or (16 if quick else 24), **kwargs),
                            epochs, "rm_last_k")


def main() -> None:
    parser = common.bench_parser(__doc__, "tiny random model")
    parser.add_argument("--last-k", type=int, default=LAST_K)
    parser.add_argument("--n-rows", type=int, help="pairs per repeat (default 24; 16 with --quick)")
    args = parser.parse_args()
    common.finish(run(args.quick, args.repeats, last_k=args.last_k, n_rows=args.n_rows, model=args.model), args.json)


if __name__ == "__main__":
    main()
