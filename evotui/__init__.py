"""evotui: evolutionary architecture search for language models, steered from a terminal."""

__version__ = "0.1.0"
