"""Evaluation metrics whose numbers equal the official evaluators'.

* :mod:`anyseg.metrics.vos`: J, F and J&F of video object segmentation (SA-V / DAVIS).
* :mod:`anyseg.metrics.saco`: SA-Co concept segmentation (cgF1, IL_MCC, positive
  micro-F1, phrase HOTA, mAP, phrase AP) for videos and images.
* :mod:`anyseg.metrics.report`: Markdown tables, JSON/CSV files, progress bars.

All of it is plain NumPy (RLE through pycocotools, matching through SciPy); nothing here
imports torch.
"""
