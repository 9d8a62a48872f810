"""A CPU stand-in for one Triton + TensorRT-LLM pod: real protocols and metrics, GPU timing modelled."""
