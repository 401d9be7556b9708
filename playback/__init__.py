"""playback."""
