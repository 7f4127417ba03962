"""``POST /predict``: each modality's inputs say how a request carries its items (image uploads, a JSON list of
texts, ...) and register that route (``Modality.inputs(clf).requests``), so the OpenAPI schema says exactly what
the run takes; what the routes share is modalities/http.py."""

from __future__ import annotations

from transferkit.modalities.http import Requests, Served
from transferkit.serve.budget import MemoryBudget


def requests_for(service: Served, decoding: MemoryBudget) -> Requests:
    """The request handling of the service's run, as its modality's inputs make it; its items are prepared
    within ``decoding``."""
    return service.inputs.requests(service, decoding)
