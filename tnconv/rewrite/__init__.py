"""Stage 4, symbolic rewrites: named rules (`tnconv.rewrite.rules`) run to a fixed point by
one driver (`tnconv.rewrite.driver`), each step priced by the cost model.

>>> from tnconv.spec import ConvSpec
>>> from tnconv.ops.convolution import forward_network
>>> [s.rule for s in rewrite(forward_network(ConvSpec(1, 1, 1, input_size=(4,)), 1)).steps][:2]
['identity_pruning', 'squeeze_size_one']
"""

from tnconv.rewrite.driver import (CLEANUP, CONNECTIVITY, DEFAULT_RULES, EXPORT_RULES, FUSION,
                                   REWRITE_ORDERS, SCATTER, SELECTION, RewriteResult, Rule,
                                   RuleSet, Step, best_rewrite, rewrite)

__all__ = ["CLEANUP", "CONNECTIVITY", "DEFAULT_RULES", "EXPORT_RULES", "FUSION", "REWRITE_ORDERS",
           "SCATTER", "SELECTION", "RewriteResult", "Rule", "RuleSet", "Step", "best_rewrite",
           "rewrite"]
