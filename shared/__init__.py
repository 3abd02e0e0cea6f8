"""Code both LMStack daemons import: protocol stubs, settings, errors, logging."""

__version__ = "0.1.0"
PROTOCOL_VERSION = 2
