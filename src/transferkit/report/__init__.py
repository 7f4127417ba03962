"""The HTML report of one or several runs (``transferkit report``): ``collect`` reads a run and predicts its
validation data, ``figures`` draws with matplotlib, ``html`` writes one self-contained file."""
