"""distillab: distil large language models into small ones, and predict how well it will work."""

__version__ = "0.1.0"
