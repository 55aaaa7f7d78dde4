"""Station runtime: camera ingest -> OpenVINO scoring -> thresholds -> typing -> stored results.

Nothing here imports torch or anomalib (the hot path runs on OpenVINO, OpenCV and NumPy);
:mod:`inspection.station.bootstrap` trains first models in a subprocess for that reason.
"""
