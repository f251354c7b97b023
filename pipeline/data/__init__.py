"""Data files shipped with the pipeline, and the scripts that build them."""
