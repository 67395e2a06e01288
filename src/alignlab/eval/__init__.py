"""Evaluation metrics on preference pairs: ranking accuracy, implicit rewards, calibration.

Example: ``from alignlab.eval.ranking import ranking_accuracy; ranking_accuracy(lw, ll).value``
"""
