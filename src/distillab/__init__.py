"""distillab: distil large language models into small ones, and predict how well it will work."""

import warnings

__version__ = "0.1.0"

# distilabel's pydantic models trigger this on import, several times; it is noise for our users.
warnings.filterwarnings(
    "ignore", message=r"The 'default' attribute with value None was provided to the `Field\(\)`"
)
