"""The study's questions answered by experiment (chapter 6), one module per question: pure functions of
scores and lengths, tested by hand, plus steps that read the artifacts earlier chapters wrote and write
outputs/<profile>/experiments/<name>/summary.json, reused by content fingerprint. `length` and `calibration`
read chapter 3's scores; `safety` fits two linear heads on the base model's frozen features; `bon` samples the
base policy and scores the samples with chapter 1's reward model and those heads; `dpo_variants` fine-tunes
the base policy briefly with each DPO-family method (and KTO) and reads the results (no model is saved).

length.py (post-hoc length regression; a product-of-experts length loss) · calibration.py (reliability,
ECE, temperature scaling) · safety.py (reward and cost heads on PKU-SafeRLHF, the r - lambda*c sweep) ·
bon.py (best-of-n, KL_BoN and the sampling step) · variants.py (DPO and its variants head to head) · run.py
(the steps on a profile's artifacts)
"""
