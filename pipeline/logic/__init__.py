"""The plain functions and classes the steps wrap: language detection, MinHash,
vector LSH, embedding, cross-language alignment, evidence, stories, topics.
Nothing here imports Beam, so each is tested as ordinary Python."""
