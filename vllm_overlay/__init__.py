"""Tooling for the vLLM multimodal overlay: pinned upstream + patch series -> wheels.

The pipeline, one module per stage:
    pin -> fetch -> apply -> build -> verify -> publish / status (bisect)
"""
