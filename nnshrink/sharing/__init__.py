"""Parameter sharing: k-means weight sharing, the hashing trick and circulant layers.

Each technique lets many weights share one stored value: k-means clusters a layer's weights into
a codebook (Deep Compression), hashing maps every virtual weight to one of a few real ones
(HashedNets), circulant layers store one row of an n x n matrix (Cheng et al. 2015).
:func:`dense_equivalent` turns all three into plain layers (for export).
"""

from .circulant import Circulant, CirculantLinear
from .clustering import init_centroids, kmeans_1d, kmeans_objective
from .dense import dense_equivalent
from .finetune import FINETUNE_LR, FINETUNE_OPTIMIZER, finetune_shared
from .hashing import HashedLinear, Hashing
from .kmeans import SharingRow, WeightSharing
from .layers import (
    SharedWeightConv2d,
    SharedWeightLinear,
    codebook_of,
    is_shared,
    share_weights,
    strip_sharing,
)

__all__ = [
    "FINETUNE_LR",
    "FINETUNE_OPTIMIZER",
    "Circulant",
    "CirculantLinear",
    "HashedLinear",
    "Hashing",
    "SharedWeightConv2d",
    "SharedWeightLinear",
    "SharingRow",
    "WeightSharing",
    "codebook_of",
    "dense_equivalent",
    "finetune_shared",
    "init_centroids",
    "is_shared",
    "kmeans_1d",
    "kmeans_objective",
    "share_weights",
    "strip_sharing",
]
