"""Low-rank decomposition: truncated SVD for Linear, CP and Tucker-2 for Conv2d, rank selection."""

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
from .tucker import (
    Tucker2,
    tucker2_conv,
    tucker2_factors,
    tucker2_macs,
    tucker2_params,
    tucker2_reconstruct,
)

__all__ = [
    "CPFactors",
    "EVBMFResult",
    "LayerDecomposition",
    "LowRank",
    "LowRankReport",
    "Tucker2",
    "allocate_budget",
    "cp_conv",
    "cp_factors",
    "cp_macs",
    "cp_params",
    "cp_reconstruct",
    "energy_rank",
    "evbmf",
    "evbmf_rank",
    "largest_rank_within",
    "ratio_rank",
    "singular_values",
    "svd_factors",
    "svd_linear",
    "svd_macs",
    "svd_params",
    "truncation_error",
    "tucker2_conv",
    "tucker2_factors",
    "tucker2_macs",
    "tucker2_params",
    "tucker2_reconstruct",
    "unfold",
]
