"""Tools on a finished release (no build state needed): inspect/stats, verify, card, export, preview."""
