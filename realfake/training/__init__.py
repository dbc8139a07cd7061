"""Training a classifier: its settings and recipes, the input pipeline and its augmentation, the
loop with its callbacks and checkpoint, and the CPU fast path.
"""
