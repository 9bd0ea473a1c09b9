"""Evaluation of a predicted dataset: :mod:`gdfree.evaluate.cohort` scores one case and summarises a cohort
with the metrics of :mod:`gdfree.metrics`, :mod:`gdfree.evaluate.files` pairs predictions with a reference
dataset and writes the tables. Both framings of the task (segmentation and post-Gd synthesis) are scored by the
same functions.
"""

from gdfree.evaluate.cohort import CaseResult, EvaluationConfig, evaluate_case, summarize

__all__ = ["CaseResult", "EvaluationConfig", "evaluate_case", "summarize"]
