"""Triton/TensorRT-LLM pod templates, GPU and model profiles, the performance model, the emulator."""
