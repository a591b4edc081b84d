"""The whole pipeline (rate → score → select → train → evaluate → report) behind ``recipes/train.py``.

Stage artifacts are cached by fingerprint (:mod:`.cache`); :mod:`.target` trains the target with
the selection, :mod:`.report` writes the run report, :mod:`.sweep` the comparison table of a sweep.
"""
