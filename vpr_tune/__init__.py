"""vpr-tune: hyperparameter search for visual place recognition on Ray Tune."""

__version__ = "0.1.0"
