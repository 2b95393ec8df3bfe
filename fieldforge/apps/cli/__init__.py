"""The ``fieldforge`` console script (:mod:`~fieldforge.apps.cli.main`), one thin module per verb."""
