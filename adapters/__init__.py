"""mmvq built-in adapters (installed as ``mmvq_adapters``): image, text, audio."""
