"""Scoring a classifier: metrics and the threshold, the damage families, the robustness report, and
what the benchmarks measure.
"""
