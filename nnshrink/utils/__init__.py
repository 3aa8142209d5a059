"""Small shared helpers: atomic file writes, seeding, progress bars."""

from .atomic import atomic_write_bytes, atomic_writer
from .env import environment
from .seed import seed_everything

__all__ = ["atomic_write_bytes", "atomic_writer", "environment", "seed_everything"]
