"""ctloop's benchmarks: each measures ctloop beside a peer or the raw limit in the same run,
and writes its section of benchmarks/RESULTS.md. Run them all with `make bench`."""
