"""newsloom's pipeline: options, the graph, its steps and the plain functions they wrap."""
