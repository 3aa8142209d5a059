"""Parameter sharing: k-means weight sharing, the hashing trick and circulant layers.

Each technique lets many weights share one stored value: k-means clusters a layer's weights into
a codebook (Deep Compression), hashing maps every virtual weight to one of a few real ones
(HashedNets), circulant layers store one row of an n x n matrix (Cheng et al. 2015).
"""

from .circulant import Circulant, CirculantLinear
from .clustering import init_centroids, kmeans_1d, kmeans_objective
from .hashing import HashedLinear, Hashing
from .kmeans import (
    SharedWeightConv2d,
    SharedWeightLinear,
    WeightSharing,
    codebook_of,
    share_weights,
    strip_sharing,
)

__all__ = [
    "Circulant",
    "CirculantLinear",
    "HashedLinear",
    "Hashing",
    "SharedWeightConv2d",
    "SharedWeightLinear",
    "WeightSharing",
    "codebook_of",
    "init_centroids",
    "kmeans_1d",
    "kmeans_objective",
    "share_weights",
    "strip_sharing",
]
