"""asv benchmarks for fastsoftmax (run asv from the parent folder, asv_benchmarks/)."""
