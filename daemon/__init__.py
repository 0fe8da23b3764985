"""xai-meter: a usage and cost metering relay for the xAI API."""

__version__ = "0.1.0"
