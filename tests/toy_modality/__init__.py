"""A toy modality: fixed-length numeric vectors (``.vectors`` files: ``label,x0,x1,...`` per line) and a small
MLP "backbone" whose weights are a safetensors file. It proves that a modality is a package of its own: it
trains, exports, serves and reports with no edit outside this folder and one registry line
(``register_modality(VECTORS)``)."""

from toy_modality.modality import VECTORS, VectorModality

__all__ = ["VECTORS", "VectorModality"]
