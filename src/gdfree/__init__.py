"""gdfree: find the MS lesions that would enhance after gadolinium, from pre-contrast MRI only."""

from gdfree.types import Case, Volume

__version__ = "0.1.0"
__all__ = ["Case", "Volume", "__version__"]
