"""Device drivers: one module per device protocol, each translating its library's errors into
gated's own (``gated.errors``) and its frames into normalised ``Reading`` values."""
