"""The control-room console: a web page and JSON API served by the daemon (CONTRACT section 7)."""
