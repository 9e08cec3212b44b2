"""Stage 7, the runtime: execution on torch tensors, and the native torch kernels."""
