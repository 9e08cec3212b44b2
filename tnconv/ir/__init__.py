"""Stage 2, the intermediate representation: `Network` of `Tensor` nodes, data views,
symbolic constants (pure Python; torch is imported only to materialise on a device).

>>> from tnconv.ir import Network, Tensor
>>> net = Network((Tensor("A", ("i", "j"), "input"),), (("i", 2), ("j", 3)), ("j",))
>>> net.validate().output_shape
(3,)
"""

from tnconv.ir.network import CONSTANT_ROLES, Network, Tensor

__all__ = ["CONSTANT_ROLES", "Network", "Tensor"]
