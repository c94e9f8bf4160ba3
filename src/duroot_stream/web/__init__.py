"""The web view of du results and live workflows (`duroot-stream serve`, `run --serve`)."""

from .app import create_app
from .server import WebServer, bind, serve_forever, url_of
from .treemap import Tile, layout

__all__ = ["Tile", "WebServer", "bind", "create_app", "layout", "serve_forever", "url_of"]
