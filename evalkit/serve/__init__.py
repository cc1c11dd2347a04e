"""`evalkit serve`: a local web app (Gradio) to try a model on an image and to browse runs and comparisons.

Only :mod:`evalkit.serve.app` imports Gradio; the other modules are the plain functions behind its two tabs
(model pool, decoding settings, uploads, the runs folder), testable without a browser.
"""
