"""GGUF files: mmap reader with precise errors (reader) and quant block facts (quants).

Pure numpy; nothing here touches the GPU (DESIGN §2).
"""

from vkinfer.gguf.quants import (
    QUANT_TYPES,
    SUPPORTED_TYPES,
    TypeInfo,
    dequantize,
    parse_type,
    quantize,
    random_blocks,
    row_bytes,
    tensor_nbytes,
    type_info,
)
from vkinfer.gguf.reader import GGUFFile, GGUFSplit, TensorInfo, open_gguf

__all__ = [
    "GGUFFile",
    "GGUFSplit",
    "TensorInfo",
    "open_gguf",
    "QUANT_TYPES",
    "SUPPORTED_TYPES",
    "TypeInfo",
    "type_info",
    "parse_type",
    "row_bytes",
    "tensor_nbytes",
    "dequantize",
    "quantize",
    "random_blocks",
]
