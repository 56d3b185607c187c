"""The report layer: everything that presents the study. The core library (the rest of `alignkit`) computes
and writes artifacts; this package alone knows about notebooks, papermill, jupyter-book, MyST, bilingual
text, readings, figures and provenance. It imports the core; the core never imports it.

build.py (papermill -> nbconvert -> jupyter-book) · chapters.py / evidence.py (the tables each chapter
prints) · readings.py (numbers -> categories) · tables.py (the one formatter) · figures.py · provenance.py ·
bench.py · landing.py · text/ (bilingual prose as files)
"""
