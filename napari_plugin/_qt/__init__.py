"""Qt widgets of the plugin (everything that needs a display lives here)."""
