"""Where rows go: the output folder (deterministic, atomic shards), resume and repair."""
