"""Unsupervised domain adaptation: loss terms on the unlabelled target stream (Outputs.unlabelled), registered in
plugins.py. The application that fits them to a target folder and chooses among them is transferkit/adapt/."""
