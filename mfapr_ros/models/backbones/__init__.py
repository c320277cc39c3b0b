"""Every backbone of the model zoo, one module each; importing this package registers them all (see ..base)."""

from ..base import discover

discover(__name__, __path__)
