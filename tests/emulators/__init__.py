"""Local HTTP emulators of outside provider APIs (real sockets on 127.0.0.1, no mocks)."""
from tests.emulators.gtm import GtmEmulator
from tests.emulators.http_server import EmulatorServer, RecordedRequest
from tests.emulators.meta import MetaGraphEmulator
from tests.emulators.shopify import ShopifyEmulator

__all__ = ["EmulatorServer", "GtmEmulator", "MetaGraphEmulator", "RecordedRequest", "ShopifyEmulator"]
