"""The ``.nns`` compressed model format: container, codecs, whole-model save/load, accounting."""

from .codebook import build_codebook, codebook_bits, decode_codebook
from .container import (
    FORMAT_VERSION,
    MAGIC,
    FormatError,
    decode_container,
    encode_container,
    is_nns_file,
    read_container,
    read_header,
    write_container,
)
from .dense import decode_dense, encode_dense
from .huffman import canonical_codes, code_lengths, huffman_decode, huffman_encode
from .model import load, read_state_dict, save, tensor_kinds
from .report import StorageReport, StorageRow, storage_report
from .sparse import relative_indices, sparse_join, sparse_split
from .tensors import TensorOptions, decode_tensor, encode_tensor

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "FormatError",
    "StorageReport",
    "StorageRow",
    "TensorOptions",
    "build_codebook",
    "canonical_codes",
    "code_lengths",
    "codebook_bits",
    "decode_codebook",
    "decode_container",
    "decode_dense",
    "decode_tensor",
    "encode_container",
    "encode_dense",
    "encode_tensor",
    "huffman_decode",
    "huffman_encode",
    "is_nns_file",
    "load",
    "read_container",
    "read_header",
    "read_state_dict",
    "relative_indices",
    "save",
    "sparse_join",
    "sparse_split",
    "storage_report",
    "tensor_kinds",
    "write_container",
]
