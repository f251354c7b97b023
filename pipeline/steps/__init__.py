"""The Beam steps of the graph: composite transforms and DoFns, each a thin shell
around the plain functions of ``pipeline.logic``."""
