"""The torch side of prunedsl: load models and data, collect statistics, prune, evaluate.

This is the only subpackage that imports torch and transformers (transformers lazily,
inside the loaders).
"""
