"""One builder per operation family; importing this package registers them all.

>>> {"forward", "unfold"} <= set(OPERATIONS)
True
"""

from . import convolution  # noqa: F401  (registers forward, unfold)
from . import autodiff  # noqa: F401  (registers input_vjp, weight_vjp, input_jvp, weight_jvp)
from . import fold  # noqa: F401  (registers fold)
from . import kfac  # noqa: F401  (registers kfc, kfac_reduce, patches, averaged_patches)
from . import sampling  # noqa: F401  (registers sampled_weight_vjp, sampled_kfc)
from . import statistics  # noqa: F401  (registers batch_l2, sum_grad_squared, variance)
from . import ggn  # noqa: F401  (registers ggn_diagonal, ggn_gram)
from . import hessian  # noqa: F401  (registers hessian_diagonal_weight, hessian_diagonal_input)
from tnconv.ops.registry import OPERATIONS, Operation, get_operation, register

__all__ = ["OPERATIONS", "Operation", "get_operation", "register"]
