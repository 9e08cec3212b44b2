"""Hypothesis strategies for convolution hyper-parameters."""

from __future__ import annotations

from hypothesis import strategies as st

PADDING_MODES = ("zeros", "circular", "reflect", "replicate")


@st.composite
def conv_params(draw, ndims=(1, 2, 3), modes=PADDING_MODES, max_kernel=3):
    """Keyword arguments of a valid convolution plus the input shape."""
    ndim = draw(st.sampled_from(ndims))
    groups = draw(st.sampled_from([1, 2, 3]))
    cin = groups * draw(st.integers(1, 2))
    cout = groups * draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, max_kernel)) for _ in range(ndim))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(ndim))
    kind = draw(st.sampled_from(["int", "tuple", "pairs", "same", "valid"]))
    stride = (1,) * ndim if kind == "same" else tuple(
        draw(st.integers(1, 3)) for _ in range(ndim))
    mode = draw(st.sampled_from(modes))
    reach = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    size = tuple(r + draw(st.integers(0, 4)) for r in reach)
    if kind == "int":
        padding = draw(st.integers(0, 2))
    elif kind == "tuple":
        padding = tuple(draw(st.integers(0, 2)) for _ in range(ndim))
    elif kind == "pairs":
        padding = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(ndim))
    else:
        padding = kind
    if mode == "reflect":  # reflect needs padding < input size
        size = tuple(max(s, 4) for s in size)
    elif mode == "circular":  # circular needs padding <= input size (torch wraps once)
        size = tuple(max(s, 2) for s in size)
    batch = draw(st.integers(1, 3))
    return dict(ndim=ndim, in_channels=cin, out_channels=cout, kernel_size=kernel,
                stride=stride, padding=padding, dilation=dilation, groups=groups,
                padding_mode=mode, input_shape=(batch, cin, *size))
