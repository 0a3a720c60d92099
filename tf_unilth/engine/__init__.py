"""The machinery under `tf_unilth.search.Search`: trainer, journal, round records."""
