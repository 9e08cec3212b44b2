"""The torch front-end of tnconv: functional forms and drop-in modules.

>>> import torch
>>> from tnconv import nn
>>> callable(nn.functional.conv), issubclass(nn.Conv2d, torch.nn.Conv2d)
(True, True)
"""

from tnconv.nn import functional
from tnconv.nn.modules import (Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d,
                               ConvTranspose3d, convert)

__all__ = ["functional", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d",
           "ConvTranspose3d", "convert"]
