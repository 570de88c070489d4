"""prunedsl: a typed language for LLM pruning metrics."""
from .errors import PruneDSLError  # noqa: F401
from .api import Metric, parse  # noqa: F401,E402
from .errors import (CompileError, ConfigError, DSLNameError, DSLSyntaxError, DSLTypeError,  # noqa: F401,E402
                     NonFiniteScoreError, PruneRuntimeError, SearchError)

__all__ = ["parse", "Metric", "PruneDSLError", "ConfigError", "DSLSyntaxError", "DSLNameError",
           "DSLTypeError", "CompileError", "PruneRuntimeError", "NonFiniteScoreError", "SearchError"]
