"""Bad-input cases of issue 23 (area: serve), gathered into tests/test_bad_inputs.py's corpus.

Every numeric option of ``transferkit serve`` is bounded where it is parsed (NaN and infinity included), and
the address is checked by binding it before the run loads: each bad value is one ``error:`` line naming the
option and its range, exit 2, before anything listens. (A value that passes would start a server: the short
timeout keeps a regression from hanging the corpus.)"""

from __future__ import annotations

from corpus_cases import Case, Workspace


def image_run(ws: Workspace) -> None:
    ws.copy("image_run", "run")


def option(name: str, kind: str, value: str, *says: str, note: str = "") -> Case:
    """``serve run <value>`` (on any free port, were it to start) is refused with exit 2."""
    port = () if "--port" in value else ("--port", "0")
    return Case(f"serve-{name}", kind, image_run, ("serve", "run", *value.split(), *port), 2,
                says=says, timeout=60, note=note)


CASES: list[Case] = [
    # the instances: a traceback for infinity/NaN bodies, NaN accepted as a batch wait
    option("max-body-mb-inf", "traceback", "--max-body-mb inf", r"--max-body-mb inf", r"0\.001 to 1024 MB"),
    option("max-body-mb-nan", "traceback", "--max-body-mb nan", r"--max-body-mb nan", r"0\.001 to 1024 MB"),
    option("batch-wait-ms-nan", "silent", "--batch-wait-ms nan", r"--batch-wait-ms nan", r"0 to 1000 ms"),
    # the same class in the other options
    option("batch-wait-ms-inf", "silent", "--batch-wait-ms inf", r"--batch-wait-ms inf", r"0 to 1000 ms"),
    option("max-image-mp-nan", "traceback", "--max-image-mp nan", r"--max-image-mp nan", r"million pixels"),
    option("max-image-mp-over-pillow", "silent", "--max-image-mp 1e12", r"--max-image-mp", r"0\.001 to 89"),
    option("max-body-mb-tiny", "silent", "--max-body-mb 1e-9", r"--max-body-mb", r"0\.001 to 1024",
           note="1e-9 MB was 0 bytes: every request refused as too large"),
    option("batch-size-huge", "silent", "--batch-size 100000000", r"--batch-size 100000000", r"1 to 1024"),
    option("max-items-huge", "silent", "--max-items 100000000", r"--max-items 100000000", r"1 to 10000"),
    option("decode-budget-nan", "silent", "--decode-budget-mb nan", r"--decode-budget-mb nan", r"1 to 1000000"),
    option("max-inflight-zero", "silent", "--max-inflight-mb 0", r"--max-inflight-mb 0", r"1 to 1000000"),
    option("port-over-65535", "usability", "--port 70000", r"--port 70000", r"0 to 65535"),
    # an address that cannot be listened on: was "serving ... on http://999.1.1.1" then uvicorn's own log line
    Case("serve-host-unresolvable", "usability", image_run, ("serve", "run", "--host", "999.1.1.1", "--port", "0"),
         2, says=(r"--host '999\.1\.1\.1'", r"127\.0\.0\.1"), avoid=(r"serving",), timeout=60),
    Case("serve-host-not-this-machine", "usability", image_run,
         ("serve", "run", "--host", "192.0.2.1", "--port", "0"), 2,
         says=(r"--host 192\.0\.2\.1", r"cannot listen there"), avoid=(r"serving",), timeout=60,
         note="192.0.2.1 is TEST-NET-1: never an address of this machine"),
    Case("serve-host-empty", "usability", image_run, ("serve", "run", "--host", "", "--port", "0"), 2,
         says=(r"--host ''", r"127\.0\.0\.1"), avoid=(r"serving",), timeout=60,
         note="getaddrinfo takes an empty host for every interface: it listened on all of them"),
]
