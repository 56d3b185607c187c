"""The study's questions answered by experiment (issue 14), one module per question: pure functions of
scores and lengths, tested by hand, plus steps that read the artifacts earlier chapters wrote and write
outputs/<profile>/experiments/<name>/summary.json, reused by content fingerprint. No model is fine-tuned here:
`length` and `calibration` read chapter 3's scores; `safety` fits two linear heads on the base model's frozen
features; `bon` samples the base policy and scores the samples with chapter 1's reward model and those heads.

length.py (post-hoc length regression; a product-of-experts length loss) · calibration.py (reliability,
ECE, temperature scaling) · safety.py (reward and cost heads on PKU-SafeRLHF, the r - lambda*c sweep) ·
bon.py (best-of-n, KL_BoN and the sampling step) · run.py (the steps on a profile's artifacts)
"""
