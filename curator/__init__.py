"""curator: curate teacher chain-of-thought data in an embedded DuckDB warehouse.

The package is library first: every CLI command is a thin wrapper over a function in one of
the concept modules: ``warehouse`` (the DuckDB file, migrations, views), ``sources``
(problem loaders), ``imports`` (existing rationales), ``teachers`` (generation and the
local teacher server in ``server``), ``grading``, ``query`` (SQL and stats), ``exporting``
(training and eval splits) and ``reporting`` (the HTML report). The commands live in
:mod:`curator.cli` and the ``cli`` module of each package, and share the options, consoles
and warehouse opening of :mod:`curator.cli_common`.
"""

__version__ = "0.1.0"
