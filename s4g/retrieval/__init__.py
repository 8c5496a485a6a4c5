"""Retrieval on embeddings: embed (images -> embeddings), evaluate (metrics and ranks),
mining (nearest references), results (per-query results), index (the tile index), baseline
(the colour-histogram matcher)."""
