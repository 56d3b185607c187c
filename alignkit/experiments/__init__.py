"""The study's questions answered by experiment (issue 14), one module per question: pure functions of
scores and lengths, tested by hand, plus steps that read the artifacts earlier chapters wrote (nothing is
retrained here) and write outputs/<profile>/experiments/<name>/summary.json, reused by content fingerprint.

length.py (post-hoc length regression; a product-of-experts length loss) · calibration.py (reliability,
ECE, temperature scaling) · bon.py (best-of-n and KL_BoN) · run.py (the steps on a profile's scores)
"""
