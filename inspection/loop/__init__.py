"""Closed loop: retrain stations from operator labels, gate candidates, promote, roll back.

Light to import: the heavy parts (torch, anomalib, OpenVINO) are imported inside the functions
that train or evaluate models. Modules:

* :mod:`.config` — :class:`~inspection.loop.config.RetrainSettings` (gate, holdout, refiner,
  typer), stored with every job;
* :mod:`.dataset` — the labelled training set assembled from the database and artifact store;
* :mod:`.jobs` — the job record: one retrain per station at a time, progress, cancellation;
* :mod:`.candidate` — builds the candidate bundle (one-class detector + optional supervised
  refinement inside the exported graph + optional open-set typer);
* :mod:`.gate` — the promotion gate (candidate and active model on the same frozen holdout);
* :mod:`.retrain` — :func:`~inspection.loop.retrain.retrain`, the whole job;
* :mod:`.promotion` — promote / one-click rollback by station name;
* :mod:`.scheduler` — per-station cron schedules and the single-box scheduler worker;
* :mod:`.station_typing` — station-side typing with the active bundle (no torch).
"""
