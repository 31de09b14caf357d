"""vpr-tune: hyperparameter search for visual place recognition on Ray Tune."""

__version__ = "0.1.0"

# Every output made from street-world data carries this line.
SYNTHETIC_NOTE = ("Numbers are synthetic (street-world data): they show the pipeline works and "
                  "that hyperparameters matter, not how a model does on real photos.")
