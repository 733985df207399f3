"""``ganforge bench``: the engine's throughput against plain PyTorch loops on the same models
(:mod:`ganforge.bench.compare`), the loops themselves (:mod:`ganforge.bench.loops`) and the
statistics of an interleaved comparison (:mod:`ganforge.bench.stats`)."""
