"""Applications on top of the library, in layers (each imports only the ones below it):

- :mod:`~fieldforge.apps.training`: methods and their registry, the trainer, run folders,
  configs, checkpoints, plans, losses, densification, distributed training, evaluation;
- :mod:`~fieldforge.apps.viewer`, :mod:`~fieldforge.apps.process`, :mod:`~fieldforge.apps.export`
  (independent of each other): the browser viewer, photographs to posed data, and a run to a
  mesh, points, a 3DGS .ply or a video;
- :mod:`~fieldforge.apps.api`: the library API (``fieldforge.train``, ``fieldforge.Run``);
- :mod:`~fieldforge.apps.bench`: benchmarks;
- :mod:`~fieldforge.apps.cli`: the ``fieldforge`` console script, one thin module per verb.
"""
