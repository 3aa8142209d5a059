"""Low-rank decomposition: truncated SVD for Linear (plain, ASVD or SVD-LLM whitening), CP and
Tucker-2 for Conv2d, rank selection."""

from .cp import CPFactors, cp_conv, cp_factors, cp_macs, cp_params, cp_reconstruct
from .decompose import LayerDecomposition, LowRank, LowRankReport
from .rank import (
    EVBMFResult,
    allocate_budget,
    energy_rank,
    evbmf,
    evbmf_rank,
    largest_rank_within,
    ratio_rank,
    singular_values,
    truncation_error,
    unfold,
)
from .svd import svd_factors, svd_linear, svd_macs, svd_params
from .targets import factorisable_conv_reason
from .tucker import (
    Tucker2,
    tucker2_conv,
    tucker2_factors,
    tucker2_macs,
    tucker2_params,
    tucker2_reconstruct,
)
from .whitening import (
    InputStatistics,
    Whitener,
    asvd_whitener,
    output_error,
    svdllm_whitener,
    whitened_svd_factors,
    whitened_svd_linear,
)

__all__ = [
    "CPFactors",
    "EVBMFResult",
    "InputStatistics",
    "LayerDecomposition",
    "LowRank",
    "LowRankReport",
    "Tucker2",
    "Whitener",
    "allocate_budget",
    "asvd_whitener",
    "cp_conv",
    "cp_factors",
    "cp_macs",
    "cp_params",
    "cp_reconstruct",
    "energy_rank",
    "evbmf",
    "evbmf_rank",
    "factorisable_conv_reason",
    "largest_rank_within",
    "output_error",
    "ratio_rank",
    "singular_values",
    "svd_factors",
    "svd_linear",
    "svd_macs",
    "svd_params",
    "svdllm_whitener",
    "truncation_error",
    "tucker2_conv",
    "tucker2_factors",
    "tucker2_macs",
    "tucker2_params",
    "tucker2_reconstruct",
    "unfold",
    "whitened_svd_factors",
    "whitened_svd_linear",
]
