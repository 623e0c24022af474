"""First-stage retrieval: Lucene BM25 through pyserini, exact or faiss dense search."""
