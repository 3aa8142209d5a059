"""Small shared helpers: atomic file writes, seeding, progress bars."""

from .atomic import atomic_write_bytes, atomic_writer
from .seed import seed_everything

__all__ = ["atomic_write_bytes", "atomic_writer", "seed_everything"]
