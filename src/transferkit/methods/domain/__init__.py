"""Unsupervised domain adaptation: loss terms on the unlabelled target stream (Outputs.unlabelled)."""
