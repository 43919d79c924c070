"""The ``hyrec`` command (:mod:`agent.cli.main`): the only place flags are parsed."""
