"""The report layer: everything that presents the study. The core library (the rest of `alignkit`) computes
and writes artifacts; this package alone knows about notebooks, papermill, jupyter-book, MyST, bilingual
text, readings, figures and provenance. It imports the core; the core never imports it.

build.py (papermill -> nbconvert -> book) · book.py (staging, jupyter-book) · chapters.py (tables of chapters
1-5, chapter 5's verdict) · experiments.py (chapter 6's tables and readings) · evidence.py (chapter 7's Q&A
evidence) · bench.py (chapter 8) · landing.py (the findings summary) · readings.py (numbers -> categories;
words in text/readings.yaml) · tables.py (the one formatter) · figures.py · provenance.py · text/ (bilingual
prose as files)
"""
