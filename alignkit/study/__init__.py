"""The study's steps above training: each reads the config, reuses its artifact while everything that
determines it is unchanged (alignkit.io.reuse), or computes and writes it. Numbers only: figures and words
belong to the report layer.

scores.py (the reward model on test and train pairs; float32 vs bfloat16) · evals.py (eval-only runs,
label disagreement) · generations.py (base vs DPO, judged by the reward model)
"""
