"""The native Llama-family backend: preallocated KV slots, one batched forward per step for
every request's chain or tree draft, FP8 weights and CUDA graphs. See `backend.NativeBackend`."""

from spec_sdk.backends.native.backend import NativeBackend
from spec_sdk.backends.native.spec import LlamaSpec, spec_from_config, spec_from_dict, spec_from_dir

__all__ = ["LlamaSpec", "NativeBackend", "spec_from_config", "spec_from_dict", "spec_from_dir"]
