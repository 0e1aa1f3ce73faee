"""keyfab: hardware roots of trust, manufacturing PKI and device provisioning."""

__version__ = "0.1.0"
