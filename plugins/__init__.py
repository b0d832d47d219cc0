"""deejai's plugin system (pluggy, entry-point group ``deejai``) and the built-in plugins."""
