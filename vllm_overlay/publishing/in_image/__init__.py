"""Scripts that run inside the image with plain python3: stdlib only, never import vllm_overlay."""
