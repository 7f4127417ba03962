"""Exporting a run as one deployable model (ONNX or TorchScript) with its preprocessing, labels and a parity
report against the run's own torch model (:func:`transferkit.export.exporter.export_run`).

``adapters`` holds what export and serve need to know about a modality's inputs.
"""
